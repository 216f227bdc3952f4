import { redactSecrets } from "../redact.ts";

/**
 * Everything the migration prints goes through here. Messages are built without tokens; as a second line of
 * defence, every token the run has read is registered and cut out of any text before it reaches the terminal.
 */
export class Output {
	private readonly known = new Set<string>();

	constructor(
		private readonly stdout: (text: string) => void = (text) => process.stdout.write(text),
		private readonly stderr: (text: string) => void = (text) => process.stderr.write(text),
	) {}

	protect(secrets: Iterable<string>): void {
		for (const secret of secrets) if (secret) this.known.add(secret);
	}

	info(text: string): void {
		this.stdout(`${this.clean(text)}\n`);
	}

	error(text: string): void {
		this.stderr(`${this.clean(text)}\n`);
	}

	private clean(text: string): string {
		return redactSecrets(text, [...this.known]);
	}
}
