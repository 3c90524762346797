/**
 * The lifecycle through the REAL Pulumi CLI on a REAL Docker 29 host running Docker's nftables
 * firewall backend (no DOCKER-USER; issue 10): the same program and arguments as on an iptables
 * host; the allowlist becomes its own nftables table. up, real traffic (TCP and UDP, IPv4 and
 * IPv6, containers' own traffic), no-change up and refresh, drift found by refresh and repaired
 * by up, an edit previewed with the table's exact lines, destroy; a foreign nftables table is
 * never touched.
 */
import { startLab, type Lab, type LabHost } from "../../lab";
import { allowlistProject, buildPackage, PulumiProject, reachWebAndDns, webAndDns } from "./support";

jest.setTimeout(900_000);

let lab: Lab;
let proj: PulumiProject;
let h: LabHost;
const FOREIGN =
  "table inet site {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 9999 drop\n\t}\n}";

function declare(allowed: { web: string[]; dns: string[] }): string {
  return JSON.stringify(webAndDns(lab, h, allowed));
}

async function nft(cmd: string): Promise<string> {
  const r = await lab.hostExec(h, `nft ${cmd}`);
  return r.code === 0 ? r.stdout : `(exit ${r.code})`;
}

const reach = () => reachWebAndDns(lab, h, false);

const only = (name: "c0" | "c1") => ({
  "c0 tcp4": name === "c0",
  "c0 tcp6": name === "c0",
  "c0 udp4": name === "c0",
  "c1 tcp4": name === "c1",
  "c1 tcp6": name === "c1",
  "c1 udp4": name === "c1",
  "container tcp out": true,
});

let foreign: string;

beforeAll(async () => {
  const packageDir = buildPackage();
  lab = await startLab({
    docker: 1,
    light: 0,
    clients: 2,
    ipv6: true,
    dockerVersion: "29",
    firewallBackend: "nftables",
  });
  h = lab.hosts[0];
  expect((await lab.hostExec(h, `printf '%s\\n' '${FOREIGN}' | nft -f -`)).code).toBe(0);
  foreign = await nft("-s list table inet site");
  const [c0] = lab.clients;
  proj = await allowlistProject(
    lab,
    packageDir,
    declare({ web: [c0.ipv4, c0.ipv6!], dns: [c0.ipv4, c0.ipv6!] }),
  );
});

afterAll(async () => {
  await proj?.dispose();
  await lab?.down();
});

describe("DockerPortAllowlist on Docker 29's nftables backend through the real engine", () => {
  test("up writes one nftables table per allowlist, in two round trips each; traffic follows", async () => {
    expect((await reach())["c1 tcp4"]).toBe(true);
    await proj.up();
    const outputs = (await proj.stackOutputs()).allowlists as Record<
      string,
      {
        firewallBackend: string;
        rules: { nft: string[] };
        lastOperation: { roundTrips: number; applied: boolean };
      }
    >;
    for (const name of ["web", "dns"]) {
      expect(outputs[name]).toMatchObject({
        firewallBackend: "nftables",
        lastOperation: { roundTrips: 2, applied: true },
      });
      expect(outputs[name].rules.nft[0]).toBe(`table inet dpa-${name} {`);
    }
    expect(outputs.web.rules.nft).toContain(lab.clients[0].ipv4);
    expect(await reach()).toEqual(only("c0"));
    expect(await nft("-s list table inet site")).toBe(foreign);
    expect((await lab.hostExec(h, "iptables-save; ip6tables-save")).stdout).not.toContain("dpa:");
  });

  test("up and refresh right after find nothing to change", async () => {
    await proj.up(["--expect-no-changes"]);
    await proj.refresh(["--expect-no-changes"]);
    await proj.up(["--expect-no-changes"]);
  });

  test("a table deleted by hand is found by refresh and put back by up", async () => {
    expect((await lab.hostExec(h, "nft delete table inet dpa-web")).code).toBe(0);
    expect((await reach())["c1 tcp4"]).toBe(true);
    const refresh = await proj.refresh(["--diff"]);
    expect(refresh.stdout).toMatch(/inSync\s*: true => false/);
    expect(refresh.stdout).toContain("nftables table inet dpa-web is missing on this host");
    await proj.up();
    expect(await reach()).toEqual(only("c0"));
    await proj.up(["--expect-no-changes"]);
  });

  test("an edit previews the table's exact lines, then moves access", async () => {
    const [c0, c1] = lab.clients;
    await proj.setConfig("allowlists", declare({ web: [c1.ipv4, c1.ipv6!], dns: [c1.ipv4, c1.ipv6!] }));
    const preview = await proj.preview();
    process.stdout.write(`--- pulumi preview --diff of the edit (nftables) ---\n${preview.stdout}\n`);
    for (const c of [c0, c1]) expect(preview.stdout).toContain(`"${c.ipv4}"`);
    expect(preview.stdout).toContain("2 to update");
    await proj.up();
    expect(await reach()).toEqual(only("c1"));
  });

  test("destroy removes the tables and nothing else", async () => {
    await proj.destroy();
    expect(await nft("list tables")).not.toContain("dpa-");
    expect(await nft("-s list table inet site")).toBe(foreign);
    expect((await reach())["c0 tcp4"]).toBe(true);
  });
});
