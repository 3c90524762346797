/**
 * Fingerprint of the part of a host's filter table one allowlist plans against.
 *
 * The planner deletes DOCKER-USER rules by position, which is only safe if the chain has not
 * changed between the read and the apply. The apply script recomputes this fingerprint on the
 * host, under the lock, with nothing but awk and sha256sum, and refuses on a mismatch:
 *
 *   iptables-save -t filter | awk -v chain=DPA-web "$FINGERPRINT_AWK" | sha256sum
 *
 * Definition (docs/DESIGN.md): the lines that are a chain header of DOCKER-USER or of our chain
 * (only the `:NAME` token; policy and counters change on their own) and the rules
 * `-A DOCKER-USER ...` / `-A <our chain> ...` verbatim, in file order, each followed by "\n";
 * sha256, lower-case hex. Fields split like awk's default (runs of blanks, leading ones ignored).
 *
 * Pure (node's crypto only).
 */
import { createHash } from "crypto";
import { DOCKER_USER, chainName } from "./layout";

/** The awk program; pass the owned chain as `-v chain=DPA-<ruleName>`. Works with mawk and gawk. */
export const FINGERPRINT_AWK =
  '$1 ~ /^:/ { n = substr($1, 2); if (n == "DOCKER-USER" || n == chain) print ":" n; next } ' +
  '$1 == "-A" && ($2 == "DOCKER-USER" || $2 == chain) { print }';

/** The lines the fingerprint covers (exported for tests and for messages on a mismatch). */
export function fingerprintLines(saveText: string, ruleName: string): string[] {
  const chain = chainName(ruleName);
  const records = saveText.split("\n");
  // awk makes no record of the empty string after a final newline.
  if (records.length > 0 && records[records.length - 1] === "") records.pop();
  const out: string[] = [];
  for (const record of records) {
    const fields = record.split(/[ \t]+/).filter((f) => f !== "");
    const first = fields[0];
    if (first === undefined) continue;
    if (first.startsWith(":")) {
      const name = first.slice(1);
      if (name === DOCKER_USER || name === chain) out.push(`:${name}`);
    } else if (first === "-A" && (fields[1] === DOCKER_USER || fields[1] === chain)) {
      out.push(record);
    }
  }
  return out;
}

/** sha256 hex of {@link fingerprintLines}, each line followed by "\n". */
export function fingerprint(saveText: string, ruleName: string): string {
  const hash = createHash("sha256");
  for (const line of fingerprintLines(saveText, ruleName)) hash.update(`${line}\n`);
  return hash.digest("hex");
}
