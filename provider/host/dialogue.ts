/**
 * The wire protocol with the host scripts: the command lines that start them, the plan message
 * the client sends, and the dialogue on the one exec of a write (question/answer by
 * `@@DPA:await-*` lines, see SYNC_SCRIPT in ./scripts.ts).
 */
import { renderRollback, type Family, type GuardUpdate } from "../core";
import type { ExecChannel, ExecResult, HostExec } from "./exec";
import { rulesPaths, type HostTarget, type PlanLike, type ResolvedLimits } from "./options";
import { READ_SCRIPT, SYNC_SCRIPT, remoteCommand } from "./scripts";
import { FAMILIES, FAMILY_DIGIT, type HostSnapshot } from "./snapshot";

/** The command line of the read script (refresh): argv rule, rulesV4Path, rulesV6Path. */
export function readCommand(target: HostTarget, sudo: boolean): string {
  const p = rulesPaths(target);
  return remoteCommand(READ_SCRIPT, "dpa-read", [target.ruleName, p.v4, p.v6], sudo);
}

/** The command line of the sync script, in the argv order SYNC_SCRIPT reads. */
export function syncCommand(
  target: HostTarget,
  limits: ResolvedLimits,
  sudo: boolean,
  pauseDir = "-",
): string {
  const p = rulesPaths(target);
  return remoteCommand(
    SYNC_SCRIPT,
    "dpa-sync",
    [
      target.ruleName,
      p.v4,
      p.v6,
      String(limits.lockWaitSeconds),
      String(limits.planTimeoutSeconds),
      String(limits.commitTimeoutSeconds),
      (target.persist ?? true) ? "1" : "0",
      String(limits.maxAttempts),
      pauseDir,
    ],
    sudo,
  );
}

/**
 * How long the client waits for the whole sync exec: every wait the script may do, plus a
 * minute of slack for the work itself.
 */
export function syncTimeoutMs(limits: ResolvedLimits): number {
  return (
    (limits.lockWaitSeconds +
      limits.maxAttempts * limits.planTimeoutSeconds +
      limits.commitTimeoutSeconds +
      60) *
    1000
  );
}

/** What the host's reply to one message was: its output up to the next question, or to the end. */
export interface Reply {
  readonly text: string;
  /** The question that ended it, or "closed" when the script ended (then `result` is set). */
  readonly until: "await-plan" | "await-commit" | "closed";
  readonly result?: ExecResult;
}

/**
 * One exec channel kept open for the dialogue with {@link SYNC_SCRIPT}. Every wait is bounded:
 * by the exec's timeout here, and on the host by the script's own read timeouts.
 */
export class Dialogue {
  private stdout = "";
  private offset = 0;
  /** Where the first line not yet looked at starts. */
  private scanned = 0;
  private channel?: ExecChannel;
  private result?: ExecResult;
  private error?: unknown;
  private wake?: () => void;

  /**
   * `onNotice` sees each `@@DPA:lock-busy` line as it arrives (the host waits for its lock and
   * says who holds it), while {@link next} still waits for the question.
   */
  constructor(
    session: HostExec,
    name: string,
    command: string,
    timeoutMs: number,
    private readonly onNotice?: (line: string) => void,
  ) {
    void session
      .exec(name, command, {
        endStdin: false,
        timeoutMs,
        onStdout: (soFar, channel) => {
          this.stdout = soFar;
          this.channel = channel;
          this.wake?.();
        },
      })
      .then(
        (r) => {
          this.result = r;
          this.wake?.();
        },
        (err: unknown) => {
          this.error = err;
          this.wake?.();
        },
      );
  }

  /**
   * Waits for the host's next question (or the end of the script). Scans each line once (from
   * `scanned` on), so a host that floods stdout costs linear time up to the output limit.
   */
  public async next(): Promise<Reply> {
    for (;;) {
      for (
        let nl = this.stdout.indexOf("\n", this.scanned);
        nl !== -1;
        nl = this.stdout.indexOf("\n", this.scanned)
      ) {
        const line = this.stdout.slice(this.scanned, nl);
        this.scanned = nl + 1;
        if (line.startsWith("@@DPA:lock-busy ")) this.onNotice?.(line);
        const m = /^@@DPA:(await-plan|await-commit)/.exec(line);
        if (m !== null) {
          const text = this.stdout.slice(this.offset, this.scanned);
          this.offset = this.scanned;
          return { text, until: m[1] as "await-plan" | "await-commit" };
        }
      }
      if (this.error !== undefined) throw this.error;
      if (this.result !== undefined) {
        const text = this.result.stdout.slice(this.offset);
        this.offset = this.scanned = this.result.stdout.length;
        return { text, until: "closed", result: this.result };
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  public send(text: string): void {
    try {
      this.channel?.write(text);
    } catch {
      // The script already ended (e.g. its plan timeout); next() reports how it ended.
    }
  }

  public end(): void {
    try {
      this.channel?.end();
    } catch {
      // As above: nothing left to close.
    }
  }

  /** Tells the host there is nothing to do: it exits at once, releasing the lock. */
  public async release(): Promise<void> {
    this.send("none\n");
    this.end();
    try {
      await this.next();
    } catch {
      // The caller reports its own, more useful error.
    }
  }
}

/**
 * The plan message of the dialogue: header `plan <nlines> <fp4> <fp6>` (the core's fingerprint of
 * the state each family's plan was made from, `-` for a family left alone), then payload/rollback
 * sections per changed family (with its ipset texts, `ipset4`, `ipsetdrop4`, `ipsetrb4`,
 * `ipsetrbdrop4`, where it has some), the conntrack cut policy the plan carries, the guard's files
 * (`guard-copy4|6`, empty = remove; `guard-script`, `guard-service`, `guard-timer`; see
 * remote/guard-install.sh) and `@@DPA:end`.
 */
export function planMessage(
  snapshot: HostSnapshot,
  plan: PlanLike,
  rule: string,
  cut: boolean,
  guard?: GuardUpdate,
): string {
  const fps: Record<Family, string> = { ipv4: "-", ipv6: "-" };
  const body: string[] = [];
  const cuts: string[] = [];
  for (const fam of FAMILIES) {
    const fp = plan.families[fam];
    if (fp === undefined || plan.inSync) continue;
    const before = snapshot[fam] ?? "";
    fps[fam] = fp.fingerprint;
    body.push(`@@DPA:payload${FAMILY_DIGIT[fam]}`, fp.payload.replace(/\n$/, ""));
    body.push(
      `@@DPA:rollback${FAMILY_DIGIT[fam]}`,
      renderRollback(before, fp.payload, rule, fam).replace(/\n$/, ""),
    );
    if (cut) cuts.push(...(fp.conntrack ?? []));
    // The family's ipsets (core's ./ipset.ts): run around its payload and its rollback.
    const sets = fp.sets;
    if (sets !== undefined) {
      const d = FAMILY_DIGIT[fam];
      for (const [name, text] of [
        [`ipset${d}`, sets.apply],
        [`ipsetdrop${d}`, sets.drop],
        [`ipsetrb${d}`, sets.rollback],
        [`ipsetrbdrop${d}`, sets.rollbackDrop],
      ]) {
        if (text !== "") body.push(`@@DPA:${name}`, text.replace(/\n$/, ""));
      }
    }
  }
  // Our nftables table (Docker's nftables backend, or what is left of it after a switch back).
  const nft = plan.inSync ? undefined : plan.nft;
  if (nft !== undefined) {
    body.push("@@DPA:payloadnft", nft.payload.replace(/\n$/, ""));
    body.push("@@DPA:rollbacknft", nft.rollback.replace(/\n$/, ""));
    if (cut) cuts.push(...(nft.conntrack ?? []));
  }
  if (cuts.length > 0) body.push("@@DPA:conntrack", ...cuts);
  const files: [string, string | undefined][] = [
    ["guard-copy4", guard?.copies.ipv4],
    ["guard-copy6", guard?.copies.ipv6],
    ["guard-copynft", guard?.copies.nft],
    ["guard-script", guard?.script],
    ["guard-service", guard?.service],
    ["guard-timer", guard?.timer],
    ["guard-listener", guard?.listener],
  ];
  for (const [name, text] of files) {
    if (text === undefined) continue;
    // A line of the file that looks like a section header would end the file early on the host.
    if (/^@@DPA:/m.test(text)) throw new Error(`planMessage: ${name} holds a line starting with @@DPA:`);
    body.push(`@@DPA:${name}`);
    if (text !== "") body.push(text.replace(/\n$/, ""));
  }
  body.push("@@DPA:end");
  const text = body.join("\n") + "\n";
  const header = [
    "plan",
    String(text.split("\n").length - 1),
    fps.ipv4,
    fps.ipv6,
    nft?.fingerprint ?? "-",
    nft?.first === true ? "first" : "last",
  ].join(" ");
  return header + "\n" + text;
}
