/**
 * Fingerprint of the part of a host's filter table one allowlist plans against.
 *
 * The planner deletes DOCKER-USER and INPUT rules by position and may insert or delete our jump
 * in FORWARD, which is only safe if those chains have not changed between the read and the
 * apply. The apply script recomputes this fingerprint on the host, under the lock, with nothing
 * but awk and sha256sum, and refuses on a mismatch:
 *
 *   iptables-save -t filter | awk -v chain=DPA-web -v forward=1 "$FINGERPRINT_AWK" | sha256sum
 *
 * Definition (docs/DESIGN.md "Fingerprint"): the chains covered are, for a plan's conflict check,
 * every chain a plan may touch ({@link FINGERPRINT_CHAINS} plus `DPA-<ruleName>`); for comparing a
 * saved rules file with the live rules ("saved"), the same without FORWARD: FORWARD is Docker's,
 * rebuilt at every start, so it would make a saved file look stale; INPUT stays, because our
 * jumps there must survive a reboot too. Over the lines of the filter table (lines before any
 * `*table` line count as filter; other tables, e.g. nat's or mangle's own INPUT in a full
 * `iptables-save` rules file, do not), keep the chain headers of covered user chains (only the
 * `:NAME` token; policy and counters change on their own) and the `-A` rules of every covered
 * chain verbatim, in file order, each followed by "\n"; sha256, lower-case hex. Built-in chains
 * (INPUT, FORWARD) always exist, so their header says nothing, and `ip6tables-save` of all tables
 * prints no empty filter table where `-t filter` prints one: with the header, a good saved file
 * of a host without IPv6 rules would look stale. Fields split like awk's default (runs of blanks,
 * leading ones ignored).
 *
 * The text is a byte string (./text.ts: one character per byte, as the SSH edge delivers it).
 *
 * Pure (node's crypto only). The host runs exactly {@link FINGERPRINT_AWK}: the remote scripts
 * carry no fingerprint logic of their own (provider/host/remote/prelude.sh).
 */
import { createHash } from "crypto";
import { DOCKER_USER, INPUT, chainName } from "./layout";
import { bytesOf } from "./text";

/** The chains a plan's fingerprint covers besides the allowlist's own `DPA-<ruleName>`. */
export const FINGERPRINT_CHAINS: readonly string[] = [INPUT, "FORWARD", DOCKER_USER];

/** Covered chains that are built in: their rules count, their header does not. */
const BUILTIN: readonly string[] = [INPUT, "FORWARD"];

/** "plan": every chain a plan may touch; "saved": what a reboot must bring back (no FORWARD). */
export type FingerprintScope = "plan" | "saved";

const test = (c: string): string => (c === "FORWARD" ? `(forward && n == "${c}")` : `n == "${c}"`);
const coveredRules = FINGERPRINT_CHAINS.map(test).join(" || ");
const coveredHeaders = FINGERPRINT_CHAINS.filter((c) => !BUILTIN.includes(c))
  .map(test)
  .join(" || ");

/**
 * The awk program; pass the owned chain as `-v chain=DPA-<ruleName>` and the scope as
 * `-v forward=1` ("plan") or `-v forward=0` ("saved"). Works with mawk, gawk and busybox awk (no
 * regex, no gawk extensions). Contains no single quote and no newline.
 */
export const FINGERPRINT_AWK =
  'substr($1, 1, 1) == "*" { t = substr($1, 2); next } ' +
  't != "" && t != "filter" { next } ' +
  `$1 ~ /^:/ { n = substr($1, 2); if (${coveredHeaders} || n == chain) print ":" n; next } ` +
  `$1 == "-A" { n = $2; if (${coveredRules} || n == chain) print }`;

/** The lines the fingerprint covers (exported for tests and for messages on a mismatch). */
export function fingerprintLines(
  saveText: string,
  ruleName: string,
  scope: FingerprintScope = "plan",
): string[] {
  const chains = new Set([...FINGERPRINT_CHAINS, chainName(ruleName)]);
  if (scope === "saved") chains.delete("FORWARD");
  const records = saveText.split("\n");
  // awk makes no record of the empty string after a final newline.
  if (records.length > 0 && records[records.length - 1] === "") records.pop();
  const out: string[] = [];
  let table = "";
  for (const record of records) {
    const fields = record.split(/[ \t]+/).filter((f) => f !== "");
    const first = fields[0];
    if (first === undefined) continue;
    if (first.startsWith("*")) {
      table = first.slice(1);
      continue;
    }
    if (table !== "" && table !== "filter") continue;
    if (first.startsWith(":")) {
      const name = first.slice(1);
      if (chains.has(name) && !BUILTIN.includes(name)) out.push(`:${name}`);
    } else if (first === "-A" && chains.has(fields[1] ?? "")) {
      out.push(record);
    }
  }
  return out;
}

/**
 * sha256 hex of {@link fingerprintLines}, each line followed by "\n", over the BYTES the host
 * printed: `saveText` is a byte string (./text.ts), so each character is hashed as the one byte it
 * stands for. A rule whose comment is not valid UTF-8 thus hashes exactly as `sha256sum` on the
 * host hashes it; hashing decoded text re-encoded as UTF-8 would differ from the host for such a
 * rule and make every apply look like a conflict.
 */
export function fingerprint(saveText: string, ruleName: string, scope: FingerprintScope = "plan"): string {
  const hash = createHash("sha256");
  for (const line of fingerprintLines(saveText, ruleName, scope)) hash.update(bytesOf(`${line}\n`));
  return hash.digest("hex");
}
