/**
 * Loopback sockets for the tests: what a browser does with the redirect (a plain GET), another program holding a
 * port, a port free on both loopback addresses, whether this machine has an IPv6 loopback at all, and a server of a
 * test's own on 127.0.0.1 that closes without waiting for hung clients.
 */
import { type IncomingMessage, request } from "node:http";
import { type AddressInfo, createServer, type Server } from "node:net";

export interface HttpAnswer {
	status: number;
	body: string;
}

/** One GET, as a browser sends it; `host` "localhost" resolves as the system does. Bounded to 5 s. */
export function httpGet(host: string, port: number, path: string): Promise<HttpAnswer> {
	return new Promise((resolve, reject) => {
		const req = request({ host, port, path, method: "GET", timeout: 5_000 }, (res) => {
			const chunks: Buffer[] = [];
			res.on("data", (chunk: Buffer) => chunks.push(chunk));
			res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
			res.on("error", reject);
		});
		req.on("timeout", () => req.destroy(new Error(`GET http://${host}:${port}${path} gave no answer in 5 s`)));
		req.on("error", reject);
		req.end();
	});
}

/** The error code of a connection attempt (`ECONNREFUSED` when nothing listens), or "connected". */
export async function connectOutcome(host: string, port: number): Promise<string> {
	return httpGet(host, port, "/").then(
		() => "connected",
		(error: NodeJS.ErrnoException) => error.code ?? error.message,
	);
}

function listen(server: Server, port: number, host: string): Promise<void> {
	return new Promise((resolve, reject) => {
		server.once("error", reject);
		server.listen(port, host, () => {
			server.off("error", reject);
			resolve();
		});
	});
}

export interface HeldPort {
	port: number;
	/** Connections the holder received (the login must never send the browser there). */
	connections: number;
	close(): Promise<void>;
}

/** Another program listening on `host:port` (0: any free port). */
export async function holdPort(host: string, port = 0): Promise<HeldPort> {
	const server = createServer();
	const held: HeldPort = {
		port: 0,
		connections: 0,
		close: () => new Promise((resolve) => server.close(() => resolve())),
	};
	server.on("connection", (socket) => {
		held.connections++;
		socket.destroy();
	});
	await listen(server, port, host);
	held.port = (server.address() as AddressInfo).port;
	return held;
}

/** Whether ::1 can be listened on here (containers often have no IPv6 loopback). */
export async function hasIpv6Loopback(): Promise<boolean> {
	const server = createServer();
	try {
		await listen(server, 0, "::1");
		return true;
	} catch {
		return false;
	} finally {
		server.close();
	}
}

/** A port that is free on 127.0.0.1 and, where it exists, ::1 (released again for the code under test). */
export async function freeLoopbackPort(): Promise<number> {
	const ipv6 = await hasIpv6Loopback();
	for (let attempt = 0; attempt < 10; attempt++) {
		const v4 = await holdPort("127.0.0.1");
		try {
			if (ipv6) await (await holdPort("::1", v4.port)).close();
			return v4.port;
		} catch {
			// taken on ::1: try another
		} finally {
			await v4.close();
		}
	}
	throw new Error("no port free on both loopback addresses in 10 attempts");
}

export interface LoopbackServer {
	port: number;
	/** Stops the server, cutting every open connection first (a hanging one too). */
	close(): Promise<void>;
}

/** Listens on 127.0.0.1 (any free port) and tracks connections, so `close` never waits for a hung client. */
export async function serveOnLoopback(server: Server | import("node:http").Server): Promise<LoopbackServer> {
	const sockets = new Set<import("node:net").Socket>();
	server.on("connection", (socket: import("node:net").Socket) => {
		sockets.add(socket);
		socket.on("close", () => sockets.delete(socket));
	});
	await listen(server as Server, 0, "127.0.0.1");
	return {
		port: (server.address() as AddressInfo).port,
		async close() {
			for (const socket of sockets) socket.destroy();
			await new Promise<void>((resolve) => server.close(() => resolve()));
		},
	};
}

/** A request's whole body, as text. */
export function readBody(req: IncomingMessage): Promise<string> {
	return new Promise((resolve, reject) => {
		const chunks: Buffer[] = [];
		req.on("data", (chunk: Buffer) => chunks.push(chunk));
		req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
		req.on("error", reject);
	});
}
