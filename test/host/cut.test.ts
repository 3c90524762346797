/**
 * Pure parts of the apply step on the host side: the conntrack flow matcher, the output
 * protocol and the quoting of the remote command. (The undo payload and the conntrack policy
 * are core's: test/core/rollback.test.ts and test/core/conntrack.test.ts.)
 */
import { execFileSync, spawnSync } from "child_process";
import { mkdtempSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { CUT_AWK, SYNC_SCRIPT, parseSections, remoteCommand } from "../../provider/host/scripts";
import { shellQuote } from "../../provider/host/ssh";

/**
 * The host's CUT_AWK, run with real awks on `conntrack -L` lines as conntrack-tools 1.4 prints
 * them. DNATed flows (reply source != original destination) to policed ports are cut unless a
 * policy network contains their original source.
 */
describe("CUT_AWK (the host's flow matcher)", () => {
  const flow = (p: string, src: string, dst: string, sport: number, dport: number, rsrc: string) =>
    `${p}      ${p === "tcp" ? 6 : 17} 431999 ${p === "tcp" ? "ESTABLISHED " : ""}src=${src} dst=${dst} ` +
    `sport=${sport} dport=${dport} src=${rsrc} dst=${src} sport=80 dport=${sport} [ASSURED] mark=0 use=1`;
  const cut = (awk: string, fam: string, policy: string[], table: string[]): string[] => {
    const dir = mkdtempSync(join(tmpdir(), "dpa-cut-"));
    try {
      writeFileSync(join(dir, "policy"), policy.join("\n") + "\n");
      const argv = ["-v", `fam=${fam}`, CUT_AWK, join(dir, "policy"), "-"];
      const out = execFileSync(
        awk === "busybox" ? "busybox" : awk,
        awk === "busybox" ? ["awk", ...argv] : argv,
        {
          input: table.join("\n") + "\n",
          encoding: "utf8",
        },
      );
      return out.split("\n").filter((l) => l !== "");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  const v4table = [
    flow("tcp", "198.18.1.7", "198.18.0.10", 40001, 8080, "172.17.0.2"), // allowed by /24
    flow("tcp", "198.18.9.9", "198.18.0.10", 40002, 8080, "172.17.0.2"), // not allowed: cut
    flow("udp", "198.18.9.9", "198.18.0.10", 40003, 8080, "172.17.0.3"), // udp not policed
    flow("tcp", "198.18.9.9", "198.18.0.10", 40004, 9090, "172.17.0.2"), // port not policed
    flow("tcp", "172.17.0.2", "198.18.5.5", 40005, 8080, "198.18.5.5"), // container outbound: not DNATed
    flow("tcp", "198.18.2.7", "198.18.0.10", 40006, 8080, "172.17.0.2"), // exact /32 allowed
    flow("tcp", "198.18.2.8", "198.18.0.11", 40007, 8080, "172.17.0.2"), // other orig dst, still policed
  ];
  const v4policy = [
    "P ipv4 tcp 8080 8080 -",
    "A ipv4 198.18.1.0/24",
    "A ipv4 198.18.2.7/32",
    "P ipv6 tcp 1 1 -",
  ];

  test.each(["mawk", "busybox"])(
    "%s: cuts exactly the DNATed flows to policed ports from sources not let in",
    (awk) => {
      expect(cut(awk, "ipv4", v4policy, v4table)).toEqual([
        "tcp 198.18.9.9 198.18.0.10 40002 8080",
        "tcp 198.18.2.8 198.18.0.11 40007 8080",
      ]);
      // With an original destination, flows to other host addresses are not ours.
      const withDst = ["P ipv4 tcp 8080 8080 198.18.0.10", "A ipv4 198.18.1.0/24"];
      expect(cut(awk, "ipv4", withDst, v4table)).toEqual([
        "tcp 198.18.9.9 198.18.0.10 40002 8080",
        "tcp 198.18.2.7 198.18.0.10 40006 8080",
      ]);
      // A wider network still covering a removed source keeps its flows; /0 keeps everything.
      expect(cut(awk, "ipv4", ["P ipv4 tcp 8000 8100 -", "A ipv4 198.18.0.0/16"], v4table)).toEqual([]);
      expect(cut(awk, "ipv4", ["P ipv4 tcp 8080 8080 -", "A ipv4 0.0.0.0/0"], v4table)).toEqual([]);
    },
  );

  test.each(["mawk", "busybox"])("%s: IPv6 sources match by prefix, nibble-aligned or not", (awk) => {
    const from = (src: string, sport: number) =>
      flow("tcp", src, "2001:db8::10", sport, 8080, "2001:db8:1::242:ac11:2");
    const table = [
      from("2001:db8:0:2::200", 41001), // in the /64
      from("2001:db8:0:3::5", 41002), // outside both: cut
      from("2001:db8:abcd::1", 41003), // 12th nibble d = 1101: first 2 bits 11, inside the /46
      from("2001:db8:abc8::1", 41004), // 12th nibble 8 = 1000: first 2 bits 10, outside: cut
    ];
    const policy = ["P ipv6 tcp 8080 8080 -", "A ipv6 2001:db8:0:2::/64", "A ipv6 2001:db8:abcc::/46"];
    expect(cut(awk, "ipv6", policy, table)).toEqual([
      "tcp 2001:db8:0:3::5 2001:db8::10 41002 8080",
      "tcp 2001:db8:abc8::1 2001:db8::10 41004 8080",
    ]);
  });
});

describe("remote command and output protocol", () => {
  test("passes every argument through bash verbatim, quotes included", () => {
    const nasty = ["a'b", '"; rm -rf / #', "$(id)", "`id`", "x y", ""];
    const cmd = remoteCommand('printf "%s\\n" "$@"', "dpa-test", nasty, false);
    const out = execFileSync("sh", ["-c", cmd], { encoding: "utf8" });
    expect(out).toBe(nasty.map((a) => `${a}\n`).join(""));
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(remoteCommand("true", "n", [], true)).toMatch(
      /^s=\$\(printf %s [A-Za-z0-9+/=]+ \| base64 -d \| gzip -dc\) && exec sudo -n -- bash -c "\$s" 'n'$/,
    );
  });

  test("the sync script travels packed: its exec request fits the 32 KiB every SSH server must take", () => {
    const cmd = remoteCommand(
      SYNC_SCRIPT,
      "dpa-sync",
      ["a-rule-name-of-63-characters-".padEnd(63, "x")],
      false,
    );
    expect(Buffer.byteLength(SYNC_SCRIPT)).toBeGreaterThan(32 * 1024); // why it is packed
    expect(Buffer.byteLength(cmd)).toBeLessThan(24 * 1024);
    const packed = /^s=\$\(printf %s (\S+) \|/.exec(cmd)![1];
    const unpacked = execFileSync("sh", ["-c", `printf %s ${packed} | base64 -d | gzip -dc`], {
      encoding: "utf8",
    });
    expect(unpacked).toBe(SYNC_SCRIPT);
  });

  test("a host without gzip fails the exec before anything runs, saying what is missing", () => {
    const cmd = remoteCommand('echo "$@" > /dev/stderr', "n", ["ran"], false);
    const r = spawnSync("/bin/sh", ["-c", cmd], { encoding: "utf8", env: { PATH: "/nonexistent" } });
    expect(r.status).not.toBe(0);
    expect(r.stderr).not.toContain("ran");
    expect(r.stderr).toMatch(/not found/);
  });

  test("splits sections and drops the blank tail of empty output", () => {
    const s = parseSections("noise\n@@DPA:save4 rc=0\n*filter\nCOMMIT\n@@DPA:save6 rc=1\n\n@@DPA:end\n");
    expect(s.get("save4")).toEqual({ header: "save4 rc=0", body: "*filter\nCOMMIT\n" });
    expect(s.get("save6")).toEqual({ header: "save6 rc=1", body: "" });
    expect(s.has("end")).toBe(true);
    expect(s.has("noise")).toBe(false);
  });
});
