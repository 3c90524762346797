/**
 * Loads the golden fixture cases of test/core/fixtures/<case>/ (see its README.md).
 */
import { existsSync, readdirSync, readFileSync } from "fs";
import { join } from "path";
import { validateAllowlist, type AllowlistSpec } from "../../../provider/core";

export const FIXTURES = join(__dirname, "..", "fixtures");

/** A filter table with the built-in chains, `chains` declared after them, then `rules`. */
export const TABLE = (rules: string[], chains = [":DOCKER-USER - [0:0]"]): string =>
  [
    "*filter",
    ":INPUT ACCEPT [0:0]",
    ":FORWARD DROP [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ...chains,
    ...rules,
    "COMMIT",
    "",
  ].join("\n");

/** The comment tag of the allowlist `web` in {@link WEB_STATE}. */
export const WEB_TAG = '-m comment --comment "dpa:web"';

/**
 * A small hand-made filter table with the allowlist `web` (8080/tcp, two sources) and a foreign
 * rule in DOCKER-USER: the state the rollback and conntrack-policy tables start from.
 */
export const WEB_STATE = [
  "*filter",
  ":FORWARD DROP [0:0]",
  ":DOCKER-USER - [0:0]",
  ":DPA-web - [0:0]",
  "-A FORWARD -j DOCKER-USER",
  `-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 ${WEB_TAG} -j DPA-web`,
  "-A DOCKER-USER -s 198.18.77.0/24 -j DROP",
  `-A DPA-web -s 198.18.1.0/24 ${WEB_TAG} -j RETURN`,
  `-A DPA-web -s 198.18.2.7/32 ${WEB_TAG} -j RETURN`,
  `-A DPA-web ${WEB_TAG} -j DROP`,
  "COMMIT",
  "",
].join("\n");

export interface FixtureCase {
  readonly name: string;
  readonly dir: string;
  readonly live: { readonly ipv4: string | null; readonly ipv6: string | null };
  /** null: the case plans a deletion. */
  readonly desired: AllowlistSpec | null;
  readonly ruleName: string;
}

function readOptional(path: string): string | null {
  return existsSync(path) ? readFileSync(path, "utf8") : null;
}

export function loadCase(name: string): FixtureCase {
  const dir = join(FIXTURES, name);
  const raw = JSON.parse(readFileSync(join(dir, "spec.json"), "utf8")) as {
    resourceName: string;
    ruleName?: string;
    args: unknown;
  };
  let desired: AllowlistSpec | null = null;
  if (raw.args !== null) {
    const v = validateAllowlist(raw.args, raw.resourceName);
    if (!v.ok) throw new Error(`fixture ${name}: spec.json is invalid: ${JSON.stringify(v.failures)}`);
    desired = v.spec;
  }
  const ruleName = desired?.ruleName ?? raw.ruleName;
  if (ruleName === undefined) throw new Error(`fixture ${name}: a deletion needs "ruleName" in spec.json`);
  return {
    name,
    dir,
    live: {
      ipv4: readOptional(join(dir, "iptables-save.v4.txt")),
      ipv6: readOptional(join(dir, "iptables-save.v6.txt")),
    },
    desired,
    ruleName,
  };
}

export function caseNames(): string[] {
  return readdirSync(FIXTURES, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(FIXTURES, d.name, "spec.json")))
    .map((d) => d.name)
    .sort();
}
