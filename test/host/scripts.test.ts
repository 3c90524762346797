/**
 * The remote scripts as the loader assembles them from provider/host/remote/: complete, valid
 * bash, carrying core's fingerprint program and cut.awk, and using only exit codes of the one
 * table in remote/exit-codes.sh.
 */
import { execFileSync } from "child_process";
import { createHash } from "crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import {
  DOCKER_NFT_NAT_CHAIN,
  DOCKER_NFT_BRIDGE_MAP,
  NFT_FAMILY,
  NFT_TABLE_PREFIX,
  DOCKER_NFT_TABLE,
  FINGERPRINT_AWK,
  GUARD_DIR,
  GUARD_LISTENER,
  GUARD_UNIT,
  GUARD_UNIT_DIR,
  fingerprint,
} from "../../provider/core";
import {
  CUT_AWK,
  EXPAND_SETS_AWK,
  EXIT,
  EXIT_NAMES,
  READ_SCRIPT,
  REMOTE_DIR,
  SYNC_SCRIPT,
  UNKNOWN_STATE_DIR,
  assembleScript,
  parseExitCodes,
  remoteFile,
} from "../../provider/host/scripts";
import { shellQuote } from "../../provider/host/ssh";
import { caseNames, loadCase } from "../core/support/fixtures";

const SCRIPTS = [
  ["READ_SCRIPT", READ_SCRIPT],
  ["SYNC_SCRIPT", SYNC_SCRIPT],
] as const;

describe("the assembled scripts", () => {
  test.each(SCRIPTS)("%s has every include and marker filled in and no template escapes", (_name, script) => {
    expect(script).not.toMatch(/^\. \.\//m);
    expect(script).not.toMatch(/'@[A-Z_]+@'/);
    expect(script).not.toContain('${"{"}');
    expect(script).not.toContain("<<'");
    expect(script).toContain(`fingerprint_awk=${shellQuote(FINGERPRINT_AWK)}\n`);
    expect(script).toMatch(/^report_state\(\) \{$/m);
  });

  test.each(SCRIPTS)("%s is valid bash (bash -n)", (_name, script) => {
    expect(() => execFileSync("bash", ["-n", "-c", script], { stdio: "pipe" })).not.toThrow();
  });

  test("the sync script carries cut.awk verbatim and the exit-code table at its top", () => {
    expect(CUT_AWK).toBe(remoteFile("cut.awk"));
    expect(SYNC_SCRIPT).toContain(`cut_awk=${shellQuote(CUT_AWK)}\n`);
    expect(SYNC_SCRIPT.indexOf("EXIT_CONFLICT=10")).toBeLessThan(SYNC_SCRIPT.indexOf("set -u"));
    expect(READ_SCRIPT).not.toContain("EXIT_");
  });

  test("ships as files beside the loader: every .sh and .awk of remote/ is used", () => {
    const used = (name: string) =>
      name === "cut.awk" ||
      name === "guard.awk" ||
      name === "expand-sets.awk" ||
      new RegExp(`^\\. \\./${name}$`, "m").test(remoteFile("sync.sh"));
    const files = readdirSync(REMOTE_DIR).filter((f) => /\.(sh|awk)$/.test(f));
    expect(files.sort()).toEqual([
      "cut.awk",
      "exit-codes.sh",
      "expand-sets.awk",
      "guard-install.sh",
      "guard.awk",
      "guard.sh",
      "prelude.sh",
      "read.sh",
      "report-state.sh",
      "sync.sh",
    ]);
    const entries = ["read.sh", "sync.sh", "guard.sh"];
    expect(files.filter((f) => !entries.includes(f) && !used(f))).toEqual([]);
  });
});

describe("the exit-code table (remote/exit-codes.sh)", () => {
  test("parses into one code per name the client knows, all distinct", () => {
    const codes = parseExitCodes(remoteFile("exit-codes.sh"));
    expect([...codes.keys()].sort()).toEqual([...EXIT_NAMES].sort());
    expect(new Set(codes.values()).size).toBe(codes.size);
    expect(EXIT).toEqual({
      DONE: 0,
      CONFLICT: 10,
      TEST_FAILED: 11,
      APPLY_FAILED: 12,
      ROLLED_BACK: 13,
      PERSIST_FAILED: 14,
      LOCK_TIMEOUT: 15,
      ROLLBACK_FAILED: 16,
      NO_PLAN: 17,
      SETUP_FAILED: 20,
      NO_FLOCK: 21,
    });
  });

  test("every exit of the sync script names a code of the table, and every code is used", () => {
    // Shell exits only: comments go, and awk's `exit }` in the section splitter ends awk only.
    const code = SYNC_SCRIPT.split("\n").filter((l) => !/^\s*#/.test(l));
    const exits = code.flatMap((l) =>
      [...l.matchAll(/(?<![\w-])exit(?![\w-])(?! *\})(.*?)(?:;|$)/g)].map((m) => m[1].trim()),
    );
    expect(exits.length).toBeGreaterThan(10);
    const names = exits.map(
      (arg) => /^"\$EXIT_([A-Z_]+)"$/.exec(arg)?.[1] ?? `not a table name: exit ${arg}`,
    );
    for (const name of names) expect(EXIT_NAMES).toContain(name);
    expect([...new Set(names)].sort()).toEqual([...EXIT_NAMES].sort());
  });

  test("rejects a line it cannot read and a name defined twice", () => {
    expect(() => parseExitCodes("EXIT_A=1\nEXIT_B=x\n")).toThrow("cannot read the line 'EXIT_B=x'");
    expect(() => parseExitCodes("EXIT_A=1 # one\nEXIT_A=2\n")).toThrow("EXIT_A is defined twice");
    expect(parseExitCodes("# c\n\nEXIT_A=1    # one\n")).toEqual(new Map([["A", 1]]));
  });
});

describe("assembleScript", () => {
  test("refuses a value without a marker and a marker without a value", () => {
    const paths = {
      GUARD_DIR,
      GUARD_LISTENER,
      GUARD_UNIT,
      GUARD_UNIT_DIR,
      UNKNOWN_STATE_DIR,
      NFT_TABLE: DOCKER_NFT_TABLE,
      NFT_NAT_CHAIN: DOCKER_NFT_NAT_CHAIN,
      NFT_BRIDGE_MAP: DOCKER_NFT_BRIDGE_MAP,
      NFT_FAMILY,
      NFT_TABLE_PREFIX,
      SET_PREFIXES: "dpa4- dpa4+ dpa6- dpa6+",
      EXPAND_SETS_AWK,
    };
    expect(() => assembleScript("read.sh", { FINGERPRINT_AWK, CUT_AWK, ...paths })).toThrow(
      "remote/read.sh: no marker '@CUT_AWK@' for the value CUT_AWK",
    );
    expect(() => assembleScript("sync.sh", { FINGERPRINT_AWK, ...paths })).toThrow(
      "remote/sync.sh: no value for the marker '@CUT_AWK@'",
    );
  });
});

/**
 * The host's `fp` (remote/prelude.sh with core's program filled in), run by bash with the
 * machine's awk on every fixture and on a whole rules file: it must give core's fingerprint.
 */
describe("fp on the host", () => {
  const prelude = assembleScript("prelude.sh", { FINGERPRINT_AWK });
  const dir = mkdtempSync(join(tmpdir(), "dpa-fp-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const hostFp = (text: string, ruleName: string, fn: "fp" | "saved_fp" = "fp"): string => {
    const file = join(dir, "rules");
    writeFileSync(file, text);
    const script = `${prelude}\nrule="$1"\n"$3" < "$2"\n`;
    return execFileSync("bash", ["-c", script, "fp-test", ruleName, file, fn], { encoding: "utf8" }).trim();
  };

  const inputs = caseNames().flatMap((name) => {
    const c = loadCase(name);
    return (["ipv4", "ipv6"] as const)
      .filter((f) => c.live[f] !== null)
      .map((f) => [`${name} ${f}`, c.live[f]!, c.ruleName] as const);
  });

  test.each(inputs)("agrees with core on %s", (_name, text, ruleName) => {
    expect(hostFp(text, ruleName)).toBe(fingerprint(text, ruleName));
    expect(hostFp(text, ruleName, "saved_fp")).toBe(fingerprint(text, ruleName, "saved"));
  });

  test("agrees with core on a rules file with every table, and hashes what sha256sum hashes", () => {
    const text =
      "*mangle\n-A FORWARD -j MARK --set-mark 1\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n";
    expect(hostFp(text, "web")).toBe(fingerprint(text, "web"));
    expect(fingerprint(text, "web")).toBe(
      createHash("sha256").update("-A FORWARD -j DOCKER-USER\n").digest("hex"),
    );
  });
});
