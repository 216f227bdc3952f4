import { describe, expect, it } from "vitest";
import { parseAuthorizationInput } from "../src/oauth/authorization.ts";
import { redactSecrets } from "../src/redact.ts";

describe("redaction", () => {
	it("Anthropic token shapes are removed wherever they appear", () => {
		const access = "sk-ant-oat01-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abc";
		const refresh = "sk-ant-ort01-ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210-_xyz";
		const text = `400 {"error":"invalid_grant","error_description":"bad ${refresh}"} sent with ${access}`;
		const out = redactSecrets(text);
		expect(out).not.toContain(access);
		expect(out).not.toContain(refresh);
		expect(out).toContain("[redacted]");
		expect(out).toContain("invalid_grant");
	});

	it("known secrets of any shape and bearer values are removed", () => {
		const odd = "opaque-secret-value-1234";
		const out = redactSecrets(`token=${odd}; Authorization: Bearer abcdefghijklmnopqrstuvwxyz`, [odd]);
		expect(out).toBe("token=[redacted]; Authorization: Bearer [redacted]");
	});
});

describe("pasted authorization input", () => {
	it("a redirect URL, code#state, a query string and a bare code are all understood", () => {
		expect(parseAuthorizationInput("http://localhost:53692/callback?code=C1&state=S1")).toEqual({
			code: "C1",
			state: "S1",
		});
		expect(parseAuthorizationInput(" C2#S2 ")).toEqual({ code: "C2", state: "S2" });
		expect(parseAuthorizationInput("code=C3&state=S3")).toEqual({ code: "C3", state: "S3" });
		expect(parseAuthorizationInput("C4")).toEqual({ code: "C4" });
		expect(parseAuthorizationInput("   ")).toEqual({});
	});
});
