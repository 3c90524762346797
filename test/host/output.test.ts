/**
 * ExecOutput, the one piece of code through which SshSession and LocalExec take a host's output:
 * decoding on whole streams and the limits, chunk by chunk as a transport delivers them.
 */
import { ExecOutput, HostError } from "../../provider/host";

const ROCKET = Buffer.from("🚀", "utf8"); // f0 9f 9a 80

describe("a multi-byte character split across chunks", () => {
  test("stdout keeps the host's exact bytes, whatever the cut", () => {
    const bytes = Buffer.concat([Buffer.from('--comment "'), ROCKET, Buffer.from('"\n')]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const o = new ExecOutput("h", "dpa-read");
      o.addStdout(bytes.subarray(0, cut));
      o.addStdout(bytes.subarray(cut));
      expect(Buffer.from(o.stdout, "latin1")).toEqual(bytes);
    }
  });

  test("stderr decodes the character whole, never as U+FFFD pairs", () => {
    const o = new ExecOutput("h", "dpa-sync");
    o.addStderr(Buffer.concat([Buffer.from("iptables: "), ROCKET.subarray(0, 2)]));
    o.addStderr(Buffer.concat([ROCKET.subarray(2), Buffer.from(" done\n")]));
    expect(o.finalStderr()).toBe("iptables: 🚀 done\n");
  });
});

describe("limits", () => {
  test("stdout up to the limit is kept; one byte more ends the exec with a HostError that says what to check", () => {
    const o = new ExecOutput("h", "dpa-read", { maxStdoutBytes: 8 });
    expect(o.addStdout(Buffer.from("12345678"))).toBe(true);
    expect(o.addStdout(Buffer.from("9"))).toBe(false);
    expect(HostError.isInstance(o.overflow)).toBe(true);
    expect(o.overflow!.kind).toBe("output-limit");
    expect(o.overflow!.message).toContain(
      'host h: "dpa-read" printed more than 8 bytes on stdout, more than this client accepts from a host, so the exec was ended',
    );
    expect(o.overflow!.message).toContain("`iptables-save -t filter | wc -c`");
    expect(o.addStdout(Buffer.from("x"))).toBe(false);
  });

  test("the defaults are 64 MiB of stdout and 1 MiB of stderr", () => {
    const o = new ExecOutput("h", "dpa-sync");
    expect(o.addStderr(Buffer.alloc(1024 * 1024, 0x41))).toBe(true);
    expect(o.addStderr(Buffer.from("B"))).toBe(false);
    expect(o.overflow!.message).toContain("printed more than 1 MiB on stderr");
    const big = new ExecOutput("h", "dpa-sync");
    expect(big.addStdout(Buffer.alloc(64 * 1024 * 1024, 0x41))).toBe(true);
    expect(big.addStdout(Buffer.from("B"))).toBe(false);
    expect(big.overflow!.message).toContain("printed more than 64 MiB on stdout");
  });
});
