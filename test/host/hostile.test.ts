/**
 * A host cannot hurt the client: the real scripts on a stub host, reached through LocalExec and
 * through a real SSH server (ssh2's, on loopback) that acts hostile: output floods, control
 * characters and escape sequences, a UTF-8 character cut between two SSH messages, and a foreign
 * rule whose comment is not UTF-8 at all.
 */
import { readFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist, type AllowlistSpec } from "../../provider/core";
import {
  LocalExec,
  SshSession,
  convergeOptions,
  findingMessages,
  readHost,
  syncHost,
  type Connect,
  type ConvergeHooks,
  type OutputLimits,
} from "../../provider/host";
import { ed25519, startSsh2Host, type Ssh2Host } from "./ssh2host";
import { StubHost } from "./stubhost";
import { hostError } from "./support";

jest.setTimeout(60_000);

const SAVE4 = readFileSync(
  join(__dirname, "..", "core", "fixtures", "docker29", "iptables-save.v4.txt"),
  "latin1",
);
/** Control characters a terminal would act on (C0 but \n and \t, DEL, C1). */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;
const ESCAPES = "\x1b[2J\x1b[H\x1b]0;owned\x07\r";

function spec(ruleName: string): AllowlistSpec {
  const v = validateAllowlist(
    { port: 8080, protocols: ["tcp"], sources: ["198.18.1.0/24"], ruleName },
    ruleName,
  );
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

/** A rule line added to the filter table, just before its COMMIT (byte strings in and out). */
function addRule(save: string, rule: string): string {
  return save.replace(/^COMMIT$/m, `${rule}\nCOMMIT`);
}

/** UTF-8 text as the byte string the SSH edge hands around. */
const bytes = (text: string) => Buffer.from(text, "utf8").toString("latin1");

let host: StubHost;
beforeEach(() => {
  host = new StubHost();
  host.write("save4", SAVE4);
  host.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
});
afterEach(() => host.remove());

function sync(connect: Connect, desired: AllowlistSpec, hooks: ConvergeHooks = {}) {
  const target = { ruleName: desired.ruleName, persist: false };
  const base = convergeOptions(desired, target, { connect, ...hooks });
  return syncHost({ host: "stubhost" }, { ...base, plan: host.leadsTo(hooks.plan ?? base.plan) });
}

function local(limits: OutputLimits = {}): LocalExec {
  const { argv, env } = host.shell();
  return new LocalExec({ host: "stubhost", shell: argv, env, ...limits });
}

describe("through LocalExec", () => {
  test("a command that floods stdout forever is ended at the default 64 MiB with a HostError", async () => {
    const err = await hostError(new LocalExec().exec("flood", "exec yes"));
    expect(err.kind).toBe("output-limit");
    expect(err.message).toContain(
      '"flood" printed more than 64 MiB on stdout, more than this client accepts',
    );
  });

  test("a command that floods stderr forever is ended at the default 1 MiB", async () => {
    const err = await hostError(new LocalExec().exec("flood", "exec yes >&2"));
    expect(err.kind).toBe("output-limit");
    expect(err.message).toContain('"flood" printed more than 1 MiB on stderr');
    expect(err.message.length).toBeLessThan(5000);
  });

  test("dpa-read of an iptables-save larger than the limit fails with the limit named", async () => {
    host.write("save4", addRule(SAVE4, "-A DOCKER-USER -s 198.51.100.1/32 -j DROP\n".repeat(10_000)));
    const err = await hostError(readHost(local({ maxStdoutBytes: 64 * 1024 }), { ruleName: "web" }));
    expect(err.kind).toBe("output-limit");
    expect(err.message).toContain('"dpa-read" printed more than 64 KiB on stdout');
  });

  test("escape sequences in stderr and in section headers never reach the message", async () => {
    host.write("test4.fail", `${ESCAPES}iptables-restore: line 5 failed\x1b[1;32m ALL GOOD\x9b2J`);
    const err = await hostError(sync(() => Promise.resolve(local()), spec("web")));
    expect(err.exitCode).toBe(11);
    expect(err.message).toContain("iptables-restore: line 5 failed ALL GOOD");
    expect(err.message).not.toMatch(CONTROL);
    expect(err.stderr).not.toMatch(CONTROL);
  });

  test("a tool's error with escape sequences is shown clean in the precondition message", async () => {
    host.write("save4.fail", `${ESCAPES}iptables-save: permission denied`);
    const err = await hostError(sync(() => Promise.resolve(local()), spec("web")));
    expect(err.kind).toBe("precondition");
    expect(err.message).toContain("iptables-save failed (iptables-save: permission denied)");
    expect(err.message).not.toMatch(CONTROL);
  });

  test("an unparsed line with escape sequences (7-bit and UTF-8 8-bit CSI) yields a clean finding", async () => {
    const save = addRule(SAVE4, bytes(`garbage ${ESCAPES} \u009b2J line`));
    const messages = findingMessages(planAllowlist({ ipv4: save, ipv6: null }, spec("web"), "web").findings);
    const unparsed = messages.find((m) => m.includes("was not understood"));
    expect(unparsed).toContain("garbage");
    expect(messages.join("\n")).not.toMatch(CONTROL);
  });

  describe("a foreign DOCKER-USER rule whose comment is not UTF-8 (bytes 0xff 0xfe)", () => {
    const FOREIGN = '-A DOCKER-USER -s 203.0.113.9/32 -m comment --comment "\xff\xfe legacy" -j DROP';
    const foreignBytes = Buffer.from(FOREIGN, "latin1");

    test("the allowlist applies in one attempt (no conflict) and the foreign line stays byte for byte", async () => {
      host.write("save4", addRule(SAVE4, FOREIGN));
      const r = await sync(() => Promise.resolve(local()), spec("web"));
      expect(r.applied).toBe(true);
      expect(r.attempts).toBe(1);
      expect(r.stats).toMatchObject({ roundTrips: 2, commits: 1 });
      expect(host.bytes("save4").includes(foreignBytes)).toBe(true);
      // The payload never renders a foreign line; it only adds ours.
      expect(host.bytes("test4").includes(Buffer.from("203.0.113.9"))).toBe(false);
      expect(r.live.ipv4).toContain(FOREIGN);
    });

    test("a rollback leaves the foreign line alone: it is never rewritten, so its bytes stay", async () => {
      host.write("save4", addRule(SAVE4, FOREIGN));
      const err = await hostError(
        sync(() => Promise.resolve(local()), spec("web"), { verify: () => ["forced by the test"] }),
      );
      expect(err.kind).toBe("rolled-back");
      // Shared chains are undone rule by rule (core's rollback.ts): the undo names only ours.
      expect(host.bytes("restore4.2").includes(Buffer.from("203.0.113.9"))).toBe(false);
      expect(host.bytes("save4")).toEqual(Buffer.from(addRule(SAVE4, FOREIGN), "latin1"));
    });
  });
});

describe("through a hostile SSH server (ssh2 on loopback, the real scripts on the stub host)", () => {
  const ROCKET = Buffer.from("🚀", "utf8");
  let server: Ssh2Host | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  function ssh(limits: OutputLimits = {}): Connect {
    const key = ed25519().private;
    return (_conn, options) =>
      SshSession.open({ host: "127.0.0.1", port: server!.port, privateKey: key }, { ...options, ...limits });
  }

  test("a 4-byte UTF-8 character cut between two SSH messages: no conflict, no U+FFFD, bytes kept", async () => {
    const foreign = bytes('-A DOCKER-USER -s 203.0.113.10/32 -m comment --comment "launch 🚀 pad" -j DROP');
    host.write("save4", addRule(SAVE4, foreign));
    server = await startSsh2Host({ shell: host.shell(), splitAfter: ROCKET.subarray(0, 2) });
    const r = await sync(ssh(), spec("web"));
    expect(r.applied).toBe(true);
    expect(r.attempts).toBe(1);
    expect(r.live.ipv4).toBe(host.read("save4"));
    expect(r.live.ipv4).toContain(foreign);
    expect(r.live.ipv4).not.toContain("\ufffd");
    expect(host.read("save4")).toContain(foreign);
  });

  test("a foreign comment with invalid UTF-8 applies in one attempt over SSH too", async () => {
    const foreign = '-A DOCKER-USER -s 203.0.113.9/32 -m comment --comment "\xff\xfe legacy" -j DROP';
    host.write("save4", addRule(SAVE4, foreign));
    server = await startSsh2Host({ shell: host.shell() });
    const r = await sync(ssh(), spec("web"));
    expect(r.applied).toBe(true);
    expect(r.attempts).toBe(1);
    expect(host.bytes("save4").includes(Buffer.from(foreign, "latin1"))).toBe(true);
  });

  test("a stdout flood beyond the session's limit ends the exec", async () => {
    host.write("save4", addRule(SAVE4, "-A DOCKER-USER -s 198.51.100.1/32 -j DROP\n".repeat(10_000)));
    server = await startSsh2Host({ shell: host.shell() });
    const err = await hostError(sync(ssh({ maxStdoutBytes: 64 * 1024 }), spec("web")));
    expect(err.kind).toBe("output-limit");
    expect(err.message).toContain('"dpa-sync" printed more than 64 KiB on stdout');
    expect(err.stats).toMatchObject({ connections: 1 });
  });

  test("a stderr flood of escape sequences ends the exec, and the message is clean", async () => {
    host.write("test4.fail", `${ESCAPES}iptables-restore: boom `.repeat(100_000));
    server = await startSsh2Host({ shell: host.shell() });
    const err = await hostError(sync(ssh(), spec("web")));
    expect(err.kind).toBe("output-limit");
    expect(err.message).toContain('"dpa-sync" printed more than 1 MiB on stderr');
    expect(err.message).toContain("iptables-restore: boom");
    expect(err.message).not.toMatch(CONTROL);
  });

  test("escape sequences in stderr over SSH never reach the message", async () => {
    host.write("test4.fail", `${ESCAPES}iptables-restore: line 5 failed`);
    server = await startSsh2Host({ shell: host.shell() });
    const err = await hostError(sync(ssh(), spec("web")));
    expect(err.exitCode).toBe(11);
    expect(err.message).toContain("iptables-restore: line 5 failed");
    expect(err.message).not.toMatch(CONTROL);
  });
});
