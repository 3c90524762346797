/**
 * The one writer of `iptables-restore` input: `*table`, chain declarations, rule commands,
 * chain deletions, `COMMIT`. Every payload the planner sends and every rollback is built here,
 * as Calico Felix's `RestoreInputBuilder` is the only code that writes this format there.
 *
 * Pure (no I/O). Guarantees:
 * - Lines come out in the order they were written: with `--noflush`, iptables-restore runs them
 *   in that order, and the callers order them on purpose (a jump is deleted before its chain).
 * - Each call is exactly one line: a chain name, table name or rule text that would split into
 *   two lines or two words is refused (throws), so no value can smuggle in another command.
 * - The text is well formed: every command sits inside `*table ... COMMIT`, and {@link build}
 *   refuses an unterminated transaction.
 */

/** One word: what iptables takes as a table or chain name (no space, quote or newline). */
const NAME = /^[^\s"'\\!]+$/;

export class RestoreBuilder {
  private readonly lines: string[] = [];
  private table: string | undefined;

  /** `*<table>`: opens a transaction; everything until {@link endTransaction} applies atomically. */
  public startTransaction(table: string): this {
    if (this.table !== undefined) {
      throw new Error(`RestoreBuilder: transaction on ${this.table} still open; end it first`);
    }
    this.table = name(table, "table");
    this.lines.push(`*${table}`);
    return this;
  }

  /**
   * `:NAME - [0:0]`: creates the user chain, or (with `--noflush`) empties the existing one.
   * Built-in chains are not declared here: that would set their policy.
   */
  public declareChain(chain: string): this {
    return this.write(`:${name(chain, "chain")} - [0:0]`);
  }

  /** `-A CHAIN <rule>`: appends a rule. */
  public append(chain: string, rule: string): this {
    return this.command("-A", chain, rule);
  }

  /** `-I CHAIN <position> <rule>`: inserts a rule at a 1-based position. */
  public insert(chain: string, position: number, rule: string): this {
    return this.command("-I", chain, `${index(position)} ${rule}`);
  }

  /**
   * `-D CHAIN <rule>`: deletes the first rule that matches `rule`. There is no delete by position:
   * a writer that ignores our lock may insert a rule between our read and our restore, and a
   * position would then name its rule instead of ours.
   */
  public deleteRule(chain: string, rule: string): this {
    return this.command("-D", chain, rule);
  }

  /** `-X CHAIN`: deletes a user chain (empty, and referenced by no rule, when the transaction ends). */
  public deleteChain(chain: string): this {
    return this.write(`-X ${name(chain, "chain")}`);
  }

  /** `COMMIT`: ends the transaction. */
  public endTransaction(): this {
    if (this.table === undefined) throw new Error("RestoreBuilder: COMMIT without a transaction");
    this.lines.push("COMMIT");
    this.table = undefined;
    return this;
  }

  /** The restore input, each line ending in a newline. */
  public build(): string {
    if (this.table !== undefined) {
      throw new Error(`RestoreBuilder: transaction on ${this.table} not ended (no COMMIT)`);
    }
    return this.lines.map((l) => `${l}\n`).join("");
  }

  private command(op: string, chain: string, rule: string): this {
    if (/[\r\n]/.test(rule))
      throw new Error(`RestoreBuilder: rule text spans lines: ${JSON.stringify(rule)}`);
    const text = rule.trim();
    return this.write(`${op} ${name(chain, "chain")}${text === "" ? "" : ` ${text}`}`);
  }

  private write(line: string): this {
    if (this.table === undefined) {
      throw new Error(`RestoreBuilder: ${JSON.stringify(line)} outside a transaction`);
    }
    this.lines.push(line);
    return this;
  }
}

function name(value: string, what: string): string {
  if (!NAME.test(value)) throw new Error(`RestoreBuilder: not a ${what} name: ${JSON.stringify(value)}`);
  return value;
}

function index(position: number): number {
  if (!Number.isInteger(position) || position < 1) {
    throw new Error(`RestoreBuilder: rule position must be an integer >= 1, got ${position}`);
  }
  return position;
}
