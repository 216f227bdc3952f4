/** One `"key": value` of a JSON object's top level, located in the text. */
export interface JsonMember {
	key: string;
	/** Index of the key's opening quote. */
	start: number;
	/** Index just past the value. */
	end: number;
}

export interface TopLevelObject {
	/** Index of `{`. */
	open: number;
	/** Index of the matching `}`. */
	close: number;
	members: JsonMember[];
}

/**
 * Locates the top-level members of a JSON object text without re-serialising anything, so one member can be cut
 * out while every other byte stays as it was. The text must already be known to parse as JSON.
 */
export function scanTopLevelObject(text: string): TopLevelObject {
	const scanner = new Scanner(text);
	scanner.skipSpace();
	const open = scanner.position;
	scanner.expect("{");
	const members: JsonMember[] = [];
	scanner.skipSpace();
	if (scanner.peek() !== "}") {
		for (;;) {
			scanner.skipSpace();
			const start = scanner.position;
			const key = JSON.parse(text.slice(start, scanner.skipString())) as string;
			scanner.skipSpace();
			scanner.expect(":");
			scanner.skipSpace();
			const end = scanner.skipValue();
			members.push({ key, start, end });
			scanner.skipSpace();
			if (scanner.peek() !== ",") break;
			scanner.expect(",");
		}
	}
	scanner.skipSpace();
	const close = scanner.position;
	scanner.expect("}");
	return { open, close, members };
}

/**
 * The text with one top-level member removed (with its comma), everything else byte for byte. For pi's
 * `JSON.stringify(data, null, 2)` layout the result is exactly what pi would write without that member. Checks
 * its own work: the result parses, and every other member's text is unchanged.
 */
export function removeTopLevelMember(text: string, key: string): string {
	const object = scanTopLevelObject(text);
	const { members } = object;
	const matches = members.filter((member) => member.key === key);
	if (matches.length !== 1) throw new Error(`expected one top-level "${key}" entry, found ${matches.length}`);
	const index = members.findIndex((member) => member.key === key);
	const next = members[index + 1];
	const previous = members[index - 1];
	let from: number;
	let to: number;
	if (next) {
		// Up to the next key: the whitespace before this key stays and indents the next one.
		[from, to] = [members[index]!.start, next.start];
	} else if (previous) {
		// The last member: the comma after the previous value goes with it.
		[from, to] = [previous.end, members[index]!.end];
	} else {
		[from, to] = [object.open + 1, object.close];
	}
	const result = text.slice(0, from) + text.slice(to);
	const kept = members.filter((member) => member.key !== key).map((member) => text.slice(member.start, member.end));
	const check = scanTopLevelObject(result);
	const after = check.members.map((member) => result.slice(member.start, member.end));
	if (after.length !== kept.length || after.some((member, i) => member !== kept[i])) {
		throw new Error(`removing "${key}" would change other entries`);
	}
	JSON.parse(result);
	return result;
}

class Scanner {
	position = 0;

	constructor(private readonly text: string) {}

	peek(): string | undefined {
		return this.text[this.position];
	}

	expect(char: string): void {
		if (this.text[this.position] !== char) throw new Error(`unexpected JSON layout at offset ${this.position}`);
		this.position++;
	}

	skipSpace(): void {
		while (/[ \t\r\n]/.test(this.text[this.position] ?? "")) this.position++;
	}

	/** Skips a string starting at the current `"`; returns the index just past its closing quote. */
	skipString(): number {
		this.expect('"');
		for (;;) {
			const char = this.text[this.position];
			if (char === undefined) throw new Error("unterminated JSON string");
			this.position += char === "\\" ? 2 : 1;
			if (char === '"') return this.position;
		}
	}

	/** Skips any value (nested objects and arrays included); returns the index just past it. */
	skipValue(): number {
		const char = this.peek();
		if (char === '"') return this.skipString();
		if (char === "{" || char === "[") {
			let depth = 0;
			do {
				const current = this.peek();
				if (current === undefined) throw new Error("unterminated JSON value");
				if (current === '"') {
					this.skipString();
					continue;
				}
				if (current === "{" || current === "[") depth++;
				else if (current === "}" || current === "]") depth--;
				this.position++;
			} while (depth > 0);
			return this.position;
		}
		while (this.position < this.text.length && !/[\s,}\]]/.test(this.text[this.position] ?? "")) this.position++;
		return this.position;
	}
}
