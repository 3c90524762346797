/**
 * Foreign rules are never deleted, even in a race (issue 9, item 3), against real iptables over
 * real SSH: the sync script stops at its `before-apply` pause point (after the fingerprint check,
 * before the restore), a writer that ignores our lock inserts a rule at the top of DOCKER-USER,
 * and the apply goes on. Our rules are deleted by their exact text, so the foreign rule survives
 * the restore; the read-back sees DOCKER-USER changed behind our back and refuses to commit; the
 * rollback, which undoes our rules one by one and never flushes the chain, keeps it too. The next
 * run plans with it and succeeds.
 *
 * Before: the payload deleted our jumps by position (`-D DOCKER-USER 1`), which then named the
 * foreign rule, and the rollback flushed DOCKER-USER and rebuilt it from the snapshot.
 */
import { comparableSave, startLab, type Lab, type LabHost } from "../../lab";
import { validateAllowlist, type AllowlistSpec } from "../../provider/core";
import { syncHost } from "../../provider/host";
import type { ConnectionArgs } from "../../provider/args";
import { hostError, syncOptions } from "./support";

jest.setTimeout(180_000);

let lab: Lab;
let h: LabHost;
beforeAll(async () => {
  lab = await startLab({ docker: 0, light: 1, clients: 0 });
  h = lab.hosts[0];
});
afterAll(async () => {
  await lab?.down();
});

function conn(): ConnectionArgs {
  return { host: h.ipv4, privateKey: lab.clientKey.privateKey, hostKey: h.hostKey };
}

function spec(port: number): AllowlistSpec {
  const v = validateAllowlist({ port, sources: ["198.18.9.0/24"], ruleName: "race" }, "race");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

/** DOCKER-USER's rules on the host, in order. */
async function dockerUser(): Promise<string[]> {
  const r = await lab.hostExec(h, "iptables -S DOCKER-USER");
  expect(r.code).toBe(0);
  return r.stdout.split("\n").filter((l) => l.startsWith("-A "));
}

/** Resolves once `file` exists on the host (the sync script reached a pause point). */
async function reached(file: string, within = 60_000): Promise<void> {
  const end = Date.now() + within;
  while ((await lab.hostExec(h, `test -e '${file}'`)).code !== 0) {
    if (Date.now() > end) throw new Error(`the sync script never reached ${file}`);
    await new Promise((r) => setImmediate(r));
  }
}

test("a foreign rule inserted at the top of DOCKER-USER between the check and the restore survives; the apply is not committed", async () => {
  expect((await syncHost(conn(), syncOptions(spec(8080)))).applied).toBe(true);
  const before = await dockerUser();
  const filterBefore = comparableSave((await lab.hostExec(h, "iptables-save -t filter")).stdout);
  expect(before[0]).toContain("--ctorigdstport 8080");

  const dir = (await lab.hostExec(h, "mktemp -d /run/dpa-pause.XXXXXX")).stdout.trim();
  expect((await lab.hostExec(h, `touch '${dir}/before-apply'`)).code).toBe(0);
  // The change moves the allowlist to another port: its jump is deleted and a new one inserted.
  const moving = hostError(syncHost(conn(), syncOptions(spec(9090), { pauseDir: dir })));
  const t0 = Date.now();
  await reached(`${dir}/before-apply.reached`);
  process.stdout.write(`pause reached after ${Date.now() - t0} ms\n`);
  const racer = "-A DOCKER-USER -s 203.0.113.9/32 -j DROP";
  expect((await lab.hostExec(h, "iptables -w -I DOCKER-USER 1 -s 203.0.113.9/32 -j DROP")).code).toBe(0);
  expect((await lab.hostExec(h, `rm -f '${dir}/before-apply'`)).code).toBe(0);

  const t1 = Date.now();
  const err = await moving;
  process.stdout.write(`sync ended ${Date.now() - t1} ms after the pause was released\n`);
  expect(err.message).toContain("another writer changed iptables DOCKER-USER while this change was applied");
  expect(err.message).toContain(`added ${JSON.stringify(racer)}`);
  // Rolled back around the racer: ours back where it was (the top), theirs kept below it.
  expect(await dockerUser()).toEqual([before[0], racer, ...before.slice(1)]);
  const filterAfter = comparableSave((await lab.hostExec(h, "iptables-save -t filter")).stdout);
  expect(filterAfter.replace(`${racer}\n`, "")).toBe(filterBefore);

  // The next run plans with the foreign rule: our jump goes above it, theirs stays.
  const again = await syncHost(conn(), syncOptions(spec(9090)));
  expect(again.applied).toBe(true);
  const now = await dockerUser();
  expect(now[0]).toContain("--ctorigdstport 9090");
  expect(now).toContain(racer);
  expect(now.join("\n")).not.toContain("--ctorigdstport 8080");
  await lab.hostExec(h, `rm -rf '${dir}'`);
});
