/**
 * Projects and the accounts bound to them. A project is the root of the git work tree a session runs in, else its
 * working directory; paths are compared after resolving symlinks. Bindings live in the user's own config only:
 * nothing is ever read from, or written into, the project itself.
 */
import { promises as fs } from "node:fs";
import { dirname, join, sep } from "node:path";
import type { ProjectBinding } from "../config/schema.ts";

/** Far more than any real directory depth: the walk up to the file system root is bounded. */
const MAX_DEPTH = 256;

/** The project a session in `cwd` belongs to: the nearest directory holding `.git` (a work tree), else `cwd`. */
export async function projectRoot(cwd: string): Promise<string> {
	const start = await realpathOrSelf(cwd);
	let dir = start;
	for (let depth = 0; depth < MAX_DEPTH; depth++) {
		// `.git` is a directory in a clone and a file in a linked worktree or a submodule: both mark a work tree.
		if (await exists(join(dir, ".git"))) return dir;
		const parent = dirname(dir);
		if (parent === dir) break;
		dir = parent;
	}
	return start;
}

export interface BindingView extends ProjectBinding {
	/** Whether the bound directory still exists (a binding is never dropped silently when it does not). */
	exists: boolean;
}

/** The binding that applies to a session in `cwd`: the deepest bound directory that is `cwd` or above it. */
export async function bindingFor(
	cwd: string,
	bindings: readonly ProjectBinding[] | undefined,
): Promise<ProjectBinding | undefined> {
	if (!bindings || bindings.length === 0) return undefined;
	const here = comparable(await realpathOrSelf(cwd));
	let best: { binding: ProjectBinding; length: number } | undefined;
	for (const binding of bindings) {
		const bound = comparable(await realpathOrSelf(binding.path));
		const inside = here === bound || here.startsWith(bound.endsWith(sep) ? bound : `${bound}${sep}`);
		if (inside && (!best || bound.length > best.length)) best = { binding, length: bound.length };
	}
	return best?.binding;
}

/** Every binding, with whether its directory still exists, for /mcc-status. */
export async function describeBindings(bindings: readonly ProjectBinding[] | undefined): Promise<BindingView[]> {
	return Promise.all((bindings ?? []).map(async (binding) => ({ ...binding, exists: await exists(binding.path) })));
}

async function realpathOrSelf(path: string): Promise<string> {
	try {
		return await fs.realpath(path);
	} catch {
		return path;
	}
}

async function exists(path: string): Promise<boolean> {
	try {
		await fs.stat(path);
		return true;
	} catch {
		return false;
	}
}

/** Windows paths are case-insensitive. */
function comparable(path: string): string {
	return process.platform === "win32" ? path.toLowerCase() : path;
}
