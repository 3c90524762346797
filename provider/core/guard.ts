/**
 * The guard on the host: what it restores (one saved copy per allowlist and family), the systemd
 * units that run it, and what the provider makes of the state the host reports about it.
 *
 * Pure functions only (no I/O; node's crypto for hashes). The guard itself is a shell script
 * (provider/host/remote/guard.sh + guard.awk) that, at boot after dockerd, after every dockerd
 * restart, after every firewalld reload and every {@link GUARD_INTERVAL_SECONDS} seconds, puts back the lines of each saved
 * copy that are missing from the live rules, and nothing else. Guarantees of what is here:
 * - A copy holds exactly the lines this allowlist owns in one family, byte-identical to what
 *   `iptables-save -t filter` prints (it is made of layout.ts's renderers, the planner's own),
 *   so a guard that finds them all in place does nothing, and one that restores them leaves the
 *   host where the planner would have left it.
 * - A copy names only this allowlist's chain and jumps and, where the allowlist polices the
 *   DOCKER-USER path, our tagged `FORWARD -> DOCKER-USER` jump (meaning: FORWARD must reach
 *   DOCKER-USER first; ours is inserted only when Docker's is missing or not first).
 * - The units and paths are constants: nothing a user wrote ever appears in them.
 */
import { createHash } from "node:crypto";
import type { Family } from "./ip";
import { finding, type Finding } from "./findings";
import {
  chainName,
  renderChainRules,
  renderForwardJump,
  renderInputJumps,
  renderJumps,
  tagOf,
  type AllowlistSpec,
} from "./layout";
import { renderSetLines, usesSet } from "./ipset";
import { nftTableOwner } from "./nft";
import { parseOwnerComment, type Owner } from "./owner";

/** The guard's own directory on the host: its script and its saved copies. */
export const GUARD_DIR = "/var/lib/docker-port-allowlist";
/** The guard script, installed by the provider (remote/guard.sh as the loader assembles it). */
export const GUARD_SCRIPT_PATH = `${GUARD_DIR}/guard.sh`;
/** One saved copy per allowlist and family: `<ruleName>.v4`, `<ruleName>.v6`. */
export const GUARD_COPIES_DIR = `${GUARD_DIR}/allowlists`;
/** Base name of the systemd units (`.service`, `.timer`). */
export const GUARD_UNIT = "docker-port-allowlist-guard";
export const GUARD_SERVICE = `${GUARD_UNIT}.service`;
export const GUARD_TIMER = `${GUARD_UNIT}.timer`;
/** The listener for firewalld's `Reloaded` signal (see {@link renderGuardListener}). */
export const GUARD_LISTENER = `${GUARD_UNIT}-firewalld.service`;
/** Where the units are installed: the administrator's unit directory. */
export const GUARD_UNIT_DIR = "/etc/systemd/system";
/**
 * Seconds between two timer runs: the bound after anything that removes our rules without
 * telling anyone (`iptables -F`, `ufw reload`); a `firewall-cmd --reload` is seen at once by the
 * listener ({@link renderGuardListener}).
 */
export const GUARD_INTERVAL_SECONDS = 20;

/**
 * What a saved copy holds: an iptables family's rules, or (Docker's nftables backend) the
 * allowlist's whole nftables table (./nft.ts), which the guard loads when the table is missing.
 */
export type CopyKind = Family | "nft";
export const COPY_KINDS: readonly CopyKind[] = ["ipv4", "ipv6", "nft"];

/** The suffix of a copy's file and section names: `4`, `6`, `nft` (`<ruleName>.v4`, `<ruleName>.nft`). */
export function copySuffix(kind: CopyKind): string {
  return kind === "nft" ? "nft" : kind === "ipv4" ? "4" : "6";
}

/** The saved copy of `ruleName` of `kind` on the host. */
export function guardCopyPath(ruleName: string, kind: CopyKind): string {
  return `${GUARD_COPIES_DIR}/${ruleName}.${kind === "nft" ? "nft" : `v${copySuffix(kind)}`}`;
}

/** Which paths of a family an allowlist polices on a host (the planner decides; see plan.ts). */
export interface PolicedPaths {
  /** FORWARD -> DOCKER-USER (DNATed traffic). */
  readonly forward: boolean;
  /** INPUT (what docker-proxy serves on the host's own sockets). */
  readonly input: boolean;
}

/**
 * The saved copy of one allowlist for one family: comment lines, then our `FORWARD` jump (only
 * where the DOCKER-USER path is policed), our DOCKER-USER jumps, our INPUT jumps and our chain
 * with its owner line, each as `iptables-save` prints it, then (`sets`: its sources are in an
 * ipset, ./ipset.ts) the set as `ipset save` prints it, which the guard creates first where it is
 * missing (a reboot empties the kernel's sets). Empty when the allowlist polices
 * nothing in `family` on this host (the provider then removes the copy). `bridges`: Docker's
 * bridges on the host in `family`, as the planner exempts them (`dockerBridges` of ./parse.ts).
 */
export function renderGuardCopy(
  spec: AllowlistSpec,
  family: Family,
  paths: PolicedPaths,
  bridges: readonly string[],
  owner?: Owner,
  sets: boolean = usesSet(spec, family),
): string {
  if (!paths.forward && !paths.input) return "";
  const lines = [
    `# docker-port-allowlist guard copy of ${chainName(spec.ruleName)} (${family}), written by the provider with every change.`,
    `# ${GUARD_SCRIPT_PATH} puts back what is missing from the live rules; do not edit (the next \`pulumi up\` rewrites it).`,
    ...(paths.forward ? [renderForwardJump(), ...renderJumps(spec, family)] : []),
    ...(paths.input ? renderInputJumps(spec) : []),
    ...renderChainRules(spec, family, bridges, owner, sets),
    ...(sets ? renderSetLines(spec, family) : []),
  ];
  return lines.map((l) => `${l}\n`).join("");
}

/**
 * The oneshot service: one guard round. Wanted by docker.service and ordered after it, so it
 * runs at boot once dockerd has built its chains (Type=notify: "started" is after that) and again
 * after every start or restart of dockerd (a restart job pulls in what the unit wants). No
 * RemainAfterExit: the unit is inactive between runs, so each start (boot, dockerd, the timer)
 * runs it again. bash runs the script, so a /var/lib mounted noexec does not stop it.
 */
export function renderGuardService(): string {
  return [
    "# Installed by docker-port-allowlist; removed with the last allowlist on this host. Do not edit.",
    "[Unit]",
    "Description=docker-port-allowlist guard: put back the allowlists' iptables rules",
    "After=docker.service firewalld.service",
    "",
    "[Service]",
    "Type=oneshot",
    `ExecStart=/bin/bash ${GUARD_SCRIPT_PATH} --once`,
    "",
    "[Install]",
    "WantedBy=docker.service",
    "",
  ].join("\n");
}

/**
 * The timer: a guard round every {@link GUARD_INTERVAL_SECONDS} seconds. AccuracySec=1s, or
 * systemd may coalesce the runs to once a minute (its default accuracy).
 */
export function renderGuardTimer(): string {
  return [
    "# Installed by docker-port-allowlist; removed with the last allowlist on this host. Do not edit.",
    "[Unit]",
    `Description=docker-port-allowlist guard, every ${GUARD_INTERVAL_SECONDS} s`,
    "",
    "[Timer]",
    `OnActiveSec=${GUARD_INTERVAL_SECONDS}s`,
    `OnUnitActiveSec=${GUARD_INTERVAL_SECONDS}s`,
    "AccuracySec=1s",
    `Unit=${GUARD_SERVICE}`,
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
}

/**
 * The listener: a guard round each time firewalld says it reloaded (its D-Bus signal
 * `org.fedoraproject.FirewallD1.Reloaded`, sent once the reload has rebuilt its rules, which
 * removed ours with DOCKER-USER), read with systemd's own `busctl monitor`, so it needs nothing a
 * systemd host lacks. Started only where firewalld is installed (the conditions: either path);
 * elsewhere systemd skips it and nothing runs. Restarted if the bus goes away.
 */
export function renderGuardListener(): string {
  return [
    "# Installed by docker-port-allowlist; removed with the last allowlist on this host. Do not edit.",
    "[Unit]",
    "Description=docker-port-allowlist guard: put the rules back after each firewalld reload",
    "After=dbus.service firewalld.service docker.service",
    "ConditionPathExists=|/usr/sbin/firewalld",
    "ConditionPathExists=|/sbin/firewalld",
    "",
    "[Service]",
    `ExecStart=/bin/bash ${GUARD_SCRIPT_PATH} --on-firewalld-reload`,
    "Restart=always",
    "RestartSec=5",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** sha256 hex of a text, as `sha256sum` prints it for the same bytes. */
export function sha256(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/** What the host reports about the guard (the `guard` section of the read, see report-state.sh). */
export interface GuardReport {
  /** The host runs systemd (`/run/systemd/system` exists). */
  readonly systemd: boolean;
  /** sha256 of the installed guard script, service, timer and firewalld listener, or "missing". */
  readonly script: string;
  readonly service: string;
  readonly timer: string;
  readonly listener: string;
  /** `systemctl is-enabled` of the timer and the service, `is-active` of the timer ("-" without systemd). */
  readonly timerEnabled: string;
  readonly serviceEnabled: string;
  readonly timerActive: string;
  /** `systemctl is-enabled` of the firewalld listener ("-" without systemd). */
  readonly listenerEnabled: string;
  /** This allowlist's saved copies as the host has them, or null (absent: null) when there is none. */
  readonly copies: {
    readonly ipv4: string | null;
    readonly ipv6: string | null;
    readonly nft?: string | null;
  };
}

/** What the guard of a host should look like for one allowlist. */
export interface GuardWanted {
  /** The allowlist's ruleName (its copies' file names). */
  readonly ruleName: string;
  /** The guard script's text (the host edge assembles it). */
  readonly script: string;
  /** This allowlist's copies ("" = none for that family; `nft` absent: ""). */
  readonly copies: { readonly ipv4: string; readonly ipv6: string; readonly nft?: string };
}

/**
 * What a write must send to bring the guard in line: copies to write ("" = remove), and the
 * script and units when the host's differ or the units are not enabled. Nothing (all undefined)
 * when the guard is current.
 */
export interface GuardUpdate {
  readonly copies: { readonly ipv4?: string; readonly ipv6?: string; readonly nft?: string };
  readonly script?: string;
  readonly service?: string;
  readonly timer?: string;
  readonly listener?: string;
}

/** True when {@link GuardUpdate} carries nothing. */
export function guardUpdateEmpty(u: GuardUpdate): boolean {
  return (
    u.copies.ipv4 === undefined &&
    u.copies.ipv6 === undefined &&
    u.copies.nft === undefined &&
    u.script === undefined &&
    u.service === undefined &&
    u.timer === undefined &&
    u.listener === undefined
  );
}

/** A copy wanted (`""`: none) and held (null: none), `nft` defaulted. */
const wantOf = (w: GuardWanted, k: CopyKind): string => w.copies[k] ?? "";
const haveOf = (r: GuardReport, k: CopyKind): string | null => r.copies[k] ?? null;
/** Whether the allowlist keeps any copy on the host (so the guard stays). */
const keepsAny = (w: GuardWanted): boolean => COPY_KINDS.some((k) => wantOf(w, k) !== "");

/** Whether the units are installed as rendered, enabled, and the timer running. */
function unitsCurrent(r: GuardReport): boolean {
  return (
    r.service === sha256(renderGuardService()) &&
    r.timer === sha256(renderGuardTimer()) &&
    r.listener === sha256(renderGuardListener()) &&
    r.timerEnabled === "enabled" &&
    r.serviceEnabled === "enabled" &&
    r.listenerEnabled === "enabled" &&
    r.timerActive === "active"
  );
}

/**
 * The update that makes the host's guard match `wanted`. A copy that should not exist is
 * removed; once no copy is left on the host, the host removes the guard itself (script, units),
 * so a delete sends only its copies' removal. Script and units go only with a copy to keep.
 */
export function guardUpdate(r: GuardReport, wanted: GuardWanted): GuardUpdate {
  const copies: { ipv4?: string; ipv6?: string; nft?: string } = {};
  for (const k of COPY_KINDS) {
    const want = wantOf(wanted, k);
    const have = haveOf(r, k);
    if (want === "" ? have !== null : have !== want) copies[k] = want;
  }
  if (!keepsAny(wanted)) return { copies };
  const script = r.script === sha256(wanted.script) ? undefined : wanted.script;
  const units = r.systemd && !unitsCurrent(r);
  return {
    copies,
    ...(script === undefined ? {} : { script }),
    ...(units
      ? { service: renderGuardService(), timer: renderGuardTimer(), listener: renderGuardListener() }
      : {}),
  };
}

/**
 * What `refresh` (and every write, on the state it leaves) says about the guard of one
 * allowlist: not installed, not enabled, or its copy not current; and, on a host without
 * systemd, that nothing runs it, naming what still brings the rules back. Host-wide findings
 * carry the family ipv4.
 */
export function guardFindings(
  r: GuardReport,
  wanted: GuardWanted,
  persist: { readonly on: boolean; readonly v4: string; readonly v6: string },
): Finding[] {
  const out: Finding[] = [];
  if (!keepsAny(wanted)) return out;
  const fallback = persist.on
    ? `What still brings the rules back at boot: the iptables-persistent files (${persist.v4}, ${persist.v6}), where iptables-persistent (or an equivalent) restores them; after a dockerd restart or a firewall reload, nothing until the next \`pulumi up\`.`
    : `Nothing brings the rules back after a reboot, a dockerd restart or a firewall reload until the next \`pulumi up\` (persist is off).`;
  if (!r.systemd) {
    out.push(
      finding(
        "guard-not-running",
        "warning",
        "ipv4",
        `This host has no systemd, so nothing runs the guard (${GUARD_SCRIPT_PATH}, installed with its saved copies). ${fallback} Fix: run \`bash ${GUARD_SCRIPT_PATH} --loop ${GUARD_INTERVAL_SECONDS}\` from the host's init system, after dockerd.`,
      ),
    );
  }
  if (r.script === "missing") {
    out.push(
      finding(
        "guard-not-installed",
        "warning",
        "ipv4",
        `The guard is not installed on this host (${GUARD_SCRIPT_PATH} is missing): nothing puts the rules back without a Pulumi run. ${fallback} Fix: \`pulumi up\` installs it.`,
      ),
    );
  } else if (r.script !== sha256(wanted.script)) {
    out.push(
      finding(
        "guard-stale",
        "warning",
        "ipv4",
        `The guard script on this host (${GUARD_SCRIPT_PATH}) is not the one this version of the provider installs. Fix: \`pulumi up\` replaces it.`,
      ),
    );
  }
  if (r.systemd && r.script !== "missing" && !unitsCurrent(r)) {
    out.push(
      finding(
        "guard-not-enabled",
        "warning",
        "ipv4",
        `The guard's systemd units are not installed as rendered, or not enabled and running (${GUARD_SERVICE}: ${r.serviceEnabled}; ${GUARD_TIMER}: ${r.timerEnabled}, ${r.timerActive}; ${GUARD_LISTENER}: ${r.listenerEnabled}): after a dockerd restart, a firewalld reload or a flush, nothing may put the rules back. ${fallback} Fix: \`pulumi up\` installs and enables them; \`systemctl status ${GUARD_TIMER}\` shows their state.`,
      ),
    );
  }
  for (const k of COPY_KINDS) {
    const want = wantOf(wanted, k);
    const have = haveOf(r, k);
    if (want === "" ? have === null : have === want) continue;
    out.push(
      finding(
        "guard-stale",
        "warning",
        k === "nft" ? "ipv4" : k,
        have === null
          ? `The guard has no saved copy of this allowlist (${guardCopyPath(wanted.ruleName, k)}), so it cannot put its rules back. Fix: \`pulumi up\` writes it.`
          : want === ""
            ? `The guard holds a saved copy of this allowlist that no longer applies on this host: it would put back rules that are not wanted. Fix: \`pulumi up\` removes it.`
            : `The guard's saved copy of this allowlist differs from what the allowlist declares: it would put back other rules than those declared. Fix: \`pulumi up\` rewrites it.`,
      ),
    );
  }
  return out;
}

/**
 * The owner named by the owner line of a saved copy (see ./owner.ts), or undefined. For an
 * nftables copy, its table's comment (names shortened as ./nft.ts writes them: compare with
 * `nftClaim`).
 */
export function guardCopyOwner(copy: string | null, ruleName: string): Owner | undefined {
  if (copy !== null && copy.startsWith("table ")) return nftTableOwner(copy, ruleName);
  for (const line of (copy ?? "").split("\n")) {
    const m = /^-A \S+ -m comment --comment "([^"]*)"$/.exec(line);
    const o = m === null ? undefined : parseOwnerComment(m[1], tagOf(ruleName));
    if (o !== undefined) return o;
  }
  return undefined;
}

/**
 * The guard as a write leaves it: `before` with `sent` applied, minus what the host reported as
 * `failed` (a copy that could not be written is removed, see remote/guard-install.sh).
 */
export function guardAfter(
  before: GuardReport,
  sent: GuardUpdate | undefined,
  failed: readonly string[],
): GuardReport {
  if (sent === undefined) return before;
  const copies: { ipv4: string | null; ipv6: string | null; nft?: string | null } = { ...before.copies };
  for (const k of COPY_KINDS) {
    const text = sent.copies[k];
    if (text === undefined) continue;
    const ok = !failed.includes(`copy${copySuffix(k)}`);
    copies[k] = text === "" || !ok ? null : text;
  }
  const unitsOk = sent.service !== undefined && !failed.includes("units");
  return {
    ...before,
    copies,
    ...(sent.script !== undefined && !failed.includes("script") ? { script: sha256(sent.script) } : {}),
    ...(unitsOk
      ? {
          service: sha256(sent.service!),
          timer: sha256(sent.timer ?? ""),
          listener: sha256(sent.listener ?? ""),
          serviceEnabled: "enabled",
          timerEnabled: "enabled",
          listenerEnabled: "enabled",
          timerActive: "active",
        }
      : {}),
  };
}

/** Findings that mean the guard is not current (the next `up` repairs them); not a host without systemd. */
export function guardDrifted(findings: readonly Finding[]): boolean {
  return findings.some((f) => f.code !== "guard-not-running" && f.code.startsWith("guard-"));
}
