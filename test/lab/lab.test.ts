/**
 * The lab itself, with real parts only: real dockerd in namespaces, real sshd, real iptables
 * and real traffic. If these fail, every other lab and engine test is meaningless.
 */
import { execFile, spawn } from "child_process";
import * as path from "path";
import { existsSync, readFileSync } from "fs";
import { startLab, Lab, LabHost, type DockerVersion } from "../../lab";

const LAB_SH = path.join(__dirname, "../../lab/lab.sh");

function sh(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 120000 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === "number"
          ? Number((err as { code: number }).code)
          : -1
        : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A pid counts as alive unless gone or a zombie (killed, waiting for init to reap it). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function netnsList(): Promise<string[]> {
  const r = await sh("ip", ["netns", "list"]);
  return r.stdout
    .split("\n")
    .map((l) => l.split(" ")[0])
    .filter((n) => n !== "");
}

jest.setTimeout(300000);

describe("lab with 2 docker hosts (one IPv6), 1 light host, 2 clients", () => {
  let lab: Lab;
  let v4: LabHost;
  let v6: LabHost;
  let lab4: Lab;
  let lab29: Lab;

  beforeAll(async () => {
    // Three labs at once, as parallel jest workers would make them: they must not collide.
    [lab, lab4, lab29] = await Promise.all([
      // Docker 20.10 and its layout, asked for by name (29 is the default; its own tests below).
      startLab({
        docker: 1,
        light: 1,
        clients: 2,
        ipv6: true,
        dockerVersion: "20.10",
        lightLayout: "docker20",
      }),
      startLab({ docker: 1, light: 0, clients: 2, dockerVersion: "20.10" }),
      startLab({ docker: 0, light: 2, clients: 0, ipv6: true, lightLayout: "docker29" }),
    ]);
    v6 = lab.hosts[0];
    v4 = lab4.hosts[0];
  });

  afterAll(async () => {
    await Promise.all([lab?.down(), lab4?.down(), lab29?.down()]);
  });

  test("the two labs got distinct ids, namespaces and address blocks", () => {
    expect(new Set([lab.id, lab4.id, lab29.id]).size).toBe(3);
    expect(lab.hosts[0].netns).not.toBe(lab4.hosts[0].netns);
    expect(lab.hosts[0].ipv4.split(".").slice(0, 3)).not.toEqual(lab4.hosts[0].ipv4.split(".").slice(0, 3));
    for (const l of [lab, lab4]) {
      for (const x of [...l.hosts, ...l.clients, l.outside]) {
        expect(x.ipv4).toMatch(/^198\.1[89]\./);
        if (x.ipv6 !== undefined) expect(x.ipv6.startsWith("2001:db8:")).toBe(true);
      }
    }
    expect(v6.dockerIpv6).toBe(true);
    expect(v4.dockerIpv6).toBe(false);
    expect(v4.ipv6).toBeUndefined();
    expect(lab.hosts[1]).toMatchObject({ kind: "light", layout: "docker20" });
  });

  test("(a) with no rules both clients reach the published TCP 8080 and UDP 5353 over IPv4 and IPv6", async () => {
    const results = await Promise.all([
      ...[lab.clients[0], lab.clients[1]].flatMap((c) => [
        lab.probe(c, v6, 8080, "tcp"),
        lab.probe(c, v6, 5353, "udp"),
        lab.probe(c, v6, 8080, "tcp", 6),
        lab.probe(c, v6, 5353, "udp", 6),
      ]),
      lab4.probe("c0", v4, 8080, "tcp"),
      lab4.probe("c0", v4, 5353, "udp"),
    ]);
    expect(results).toEqual(results.map(() => true));
  });

  test("a port nothing is published on is closed (the probe can say no)", async () => {
    expect(await lab.probe("c0", v6, 8081, "tcp")).toBe(false);
    expect(await lab.probe("c0", v6, 5354, "udp")).toBe(false);
  });

  test("(b) a DROP for one client in DOCKER-USER blocks it and only it", async () => {
    const c0 = lab4.clients[0];
    const c1 = lab4.clients[1];
    const ins = await lab4.hostExec(v4, `iptables -I DOCKER-USER 1 -s ${c0.ipv4}/32 -j DROP`);
    expect(ins).toMatchObject({ code: 0 });
    try {
      const [t0, u0, t1, u1] = await Promise.all([
        lab4.probe(c0, v4, 8080, "tcp"),
        lab4.probe(c0, v4, 5353, "udp"),
        lab4.probe(c1, v4, 8080, "tcp"),
        lab4.probe(c1, v4, 5353, "udp"),
      ]);
      expect({ t0, u0, t1, u1 }).toEqual({ t0: false, u0: false, t1: true, u1: true });
      // The rule lives only in that host's namespace: the other lab's host still lets c0 in.
      expect(await lab.probe("c0", v6, 8080, "tcp")).toBe(true);
    } finally {
      await lab4.hostExec(v4, `iptables -D DOCKER-USER -s ${c0.ipv4}/32 -j DROP`);
    }
    expect(await lab4.probe(c0, v4, 8080, "tcp")).toBe(true);
  });

  test("(b6) on the IPv6 host, a DROP in an ip6tables DOCKER-USER made like newer Docker blocks the v6 client only", async () => {
    const c0 = lab.clients[0];
    // dockerd 20.10 makes no ip6tables DOCKER-USER: confirm the lab left that as it was.
    const before = await lab.hostExec(v6, "ip6tables -S DOCKER-USER");
    expect(before.code).not.toBe(0);
    const setup = await lab.hostExec(
      v6,
      `ip6tables -N DOCKER-USER && ip6tables -I FORWARD 1 -j DOCKER-USER && ip6tables -A DOCKER-USER -s ${c0.ipv6}/128 -j DROP`,
    );
    expect(setup).toMatchObject({ code: 0 });
    try {
      expect(await lab.probe(c0, v6, 8080, "tcp", 6)).toBe(false);
      expect(await lab.probe(lab.clients[1], v6, 8080, "tcp", 6)).toBe(true);
      // IPv4 from the same client is untouched by an ip6tables rule.
      expect(await lab.probe(c0, v6, 8080, "tcp", 4)).toBe(true);
    } finally {
      await lab.hostExec(
        v6,
        "ip6tables -D FORWARD -j DOCKER-USER; ip6tables -F DOCKER-USER; ip6tables -X DOCKER-USER",
      );
    }
  });

  test("(c) a container reaches the outside server on any port, TCP and UDP, and a DROP on that port stops it", async () => {
    expect(await lab4.containerProbe(v4, 443, "tcp")).toBe(true);
    expect(await lab4.containerProbe(v4, 53, "udp")).toBe(true);
    expect(await lab.containerProbe(v6, 8443, "tcp", 6)).toBe(true);
    const rule = `DOCKER-USER -p tcp -m conntrack --ctorigdstport 443 -j DROP`;
    expect(await lab4.hostExec(v4, `iptables -I ${rule}`)).toMatchObject({ code: 0 });
    try {
      expect(await lab4.containerProbe(v4, 443, "tcp")).toBe(false);
      expect(await lab4.containerProbe(v4, 444, "tcp")).toBe(true);
    } finally {
      await lab4.hostExec(v4, `iptables -D ${rule}`);
    }
  });

  test("(d) sshd accepts the lab key for root and dpasudo with a pinned host key; dpapwsudo cannot sudo -n", async () => {
    const root = await sh(
      "ssh",
      lab.sshArgv(v6, "root", "id -u && iptables -S DOCKER-USER && ls -d /etc/iptables"),
    );
    expect(root.stderr).toBe("");
    expect(root.stdout).toContain("0\n-N DOCKER-USER\n");
    const sudo = await sh(
      "ssh",
      lab.sshArgv(v6, lab.users.sudo, "id -un && sudo -n iptables -S DOCKER-USER"),
    );
    expect(sudo.stdout).toContain("dpasudo\n-N DOCKER-USER\n");
    const pw = await sh("ssh", lab.sshArgv(v6, lab.users.sudoPassword, "id -un; sudo -n true"));
    expect(pw.stdout).toBe("dpapwsudo\n");
    expect(pw.code).not.toBe(0);
    expect(pw.stderr).toContain("password is required");
    // The light host answers too, with its own key: the pin is per host.
    const light = await sh("ssh", lab.sshArgv(lab.hosts[1], "root", "iptables -S DOCKER-USER"));
    expect(light).toMatchObject({ code: 0, stdout: "-N DOCKER-USER\n-A DOCKER-USER -j RETURN\n" });
    expect(lab.hosts[1].hostKey).not.toBe(v6.hostKey);
  });

  test("(d) a host presenting another key than the pinned one is refused", async () => {
    const argv = lab.sshArgv(v6, "root", "true");
    // Point the pin for h0's address at h1's key.
    const wrong = `${lab.dir}/wrong_known_hosts`;
    await sh("sh", ["-c", `echo '${v6.ipv4} ${lab.hosts[1].hostKey}' > ${wrong}`]);
    const i = argv.findIndex((a) => a.startsWith("UserKnownHostsFile="));
    argv[i] = `UserKnownHostsFile=${wrong}`;
    const r = await sh("ssh", argv);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
  });

  test("light hosts carry the chosen Docker layout: 20.10 with RETURN and no v6 DOCKER-USER, 29 without RETURN and with one", async () => {
    const l20 = await lab.hostExec(
      lab.hosts[1],
      "iptables -S FORWARD; iptables -S DOCKER-USER; ip6tables -S DOCKER-USER",
    );
    expect(l20.stdout).toContain("-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n");
    expect(l20.stdout).toContain("-N DOCKER-USER\n-A DOCKER-USER -j RETURN\n");
    expect(l20.code).not.toBe(0); // no ip6tables DOCKER-USER, like the real 20.10 daemon
    const h29 = lab29.hosts[1];
    expect(h29).toMatchObject({ kind: "light", layout: "docker29", dockerIpv6: true });
    const l29 = await lab29.hostExec(
      h29,
      "iptables -S FORWARD; iptables -S DOCKER-USER; ip6tables -S DOCKER-USER; iptables -S DOCKER-CT",
    );
    expect(l29).toMatchObject({ code: 0 });
    expect(l29.stdout).toBe(
      [
        "-P FORWARD DROP",
        "-A FORWARD -j DOCKER-USER",
        "-A FORWARD -j DOCKER-FORWARD",
        "-N DOCKER-USER",
        "-N DOCKER-USER",
        "-N DOCKER-CT",
        "-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "",
      ].join("\n"),
    );
    // Every light host of the 20-host kind answers SSH with its own pinned key.
    const r = await sh("ssh", lab29.sshArgv(lab29.hosts[0], "root", "hostname -I"));
    expect(r).toMatchObject({ code: 0 });
    expect(r.stdout).toContain(lab29.hosts[0].ipv4);
  });

  test("bad options are refused before anything is made, naming the field and what is allowed", async () => {
    await expect(startLab({ docker: -1, light: 0, clients: 0 })).rejects.toThrow(
      "startLab: docker must be a whole number from 0 to 190, got -1",
    );
    await expect(startLab({ docker: 0, light: 0, clients: 1 })).rejects.toThrow(
      "a lab needs at least one host",
    );
    const r = await sh("bash", [LAB_SH, "up", "--light-layout", "docker99"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("lab: up: --light-layout must be docker20 or docker29, got 'docker99'\n");
    const v = await sh("bash", [LAB_SH, "up", "--docker-version", "29,28"]);
    expect(v.stderr).toBe(
      "lab: up: --docker-version must be 20.10 or 29, or a comma-separated list of them (one per docker host), got '29,28'\n",
    );
    const nft20 = await sh("bash", [
      LAB_SH,
      "up",
      "--docker",
      "2",
      "--docker-version",
      "29,20.10",
      "--firewall-backend",
      "nftables",
    ]);
    expect(nft20.stderr).toBe(
      "lab: up: docker host h1: --firewall-backend nftables needs --docker-version 29 (Docker 20.10 has no nftables backend)\n",
    );
    await expect(
      startLab({ docker: 1, light: 0, clients: 0, dockerVersion: "28" as unknown as DockerVersion }),
    ).rejects.toThrow(
      'startLab: dockerVersion must be one of "20.10", "29" or a non-empty list of them, got "28"',
    );
    await expect(lab.hostExec("h9", "true")).rejects.toThrow("no host 'h9'; hosts are h0, h1");
  });

  test("a lab whose owner process died is reaped by down-all --stale, and a lab with a live owner is not", async () => {
    // The owner is a process of ours that we then kill, as a crashed jest worker would be.
    const owner = spawn("sleep", ["600"], { stdio: "ignore" });
    const up = await sh("bash", [
      LAB_SH,
      "up",
      "--docker",
      "1",
      "--light",
      "1",
      "--clients",
      "1",
      "--owner-pid",
      String(owner.pid),
    ]);
    expect(up.code).toBe(0);
    const dir = path.dirname(up.stdout.trim());
    const id = path.basename(dir);
    const dockerPid = Number(readFileSync(`${dir}/h0/docker.pid`, "utf8"));
    expect(alive(dockerPid)).toBe(true);
    expect((await sh("bash", [LAB_SH, "down-all", "--stale"])).code).toBe(0);
    expect(existsSync(dir)).toBe(true); // owner still alive: kept
    owner.kill("SIGKILL");
    await new Promise((r) => owner.once("exit", r));
    const reap = await sh("bash", [LAB_SH, "down-all", "--stale"]);
    expect(reap.code).toBe(0);
    expect(existsSync(dir)).toBe(false);
    expect(alive(dockerPid)).toBe(false);
    expect((await netnsList()).filter((n) => n.startsWith(`${id}-`))).toEqual([]);
    // Our own labs (live owner: this process) survived the sweep.
    expect(await lab.probe("c0", v6, 8080, "tcp")).toBe(true);
  });

  test("reboot restores the persisted rules before dockerd starts, or starts clean with restorePersisted false", async () => {
    const [c0, c1] = lab4.clients;
    const save = await lab4.hostExec(
      v4,
      `iptables -I DOCKER-USER -s ${c0.ipv4}/32 -j DROP && iptables-save > /etc/iptables/rules.v4`,
    );
    expect(save).toMatchObject({ code: 0 });
    await lab4.reboot(v4);
    const after = await lab4.hostExec(v4, "iptables -S DOCKER-USER; iptables -S FORWARD 1");
    expect(after.stdout).toBe(
      `-N DOCKER-USER\n-A DOCKER-USER -s ${c0.ipv4}/32 -j DROP\n-A DOCKER-USER -j RETURN\n-A FORWARD -j DOCKER-USER\n`,
    );
    expect(await lab4.probe(c0, v4, 8080, "tcp")).toBe(false);
    expect(await lab4.probe(c1, v4, 8080, "tcp")).toBe(true);
    expect(await lab4.probe(c1, v4, 5353, "udp")).toBe(true);
    // SSH survives a reboot (sshd is not restarted) and still sees the persisted file.
    const ssh = await sh(
      "ssh",
      lab4.sshArgv(v4, "root", `grep -c -- '-s ${c0.ipv4}/32 -j DROP' /etc/iptables/rules.v4`),
    );
    expect(ssh).toMatchObject({ code: 0, stdout: "1\n" });
    await lab4.reboot(v4, { restorePersisted: false });
    const clean = await lab4.hostExec(v4, "iptables -S DOCKER-USER");
    expect(clean.stdout).toBe("-N DOCKER-USER\n-A DOCKER-USER -j RETURN\n");
    expect(await lab4.probe(c0, v4, 8080, "tcp")).toBe(true);
    await expect(lab.reboot(lab.hosts[1])).rejects.toThrow("reboot needs a docker host; h1 is a light host");
  });

  test("hostExec and SSH sessions see the host's own /etc/iptables, not the machine's", async () => {
    const w = await lab.hostExec(v6, `echo ${lab.id}-h0 > /etc/iptables/rules.v4`);
    expect(w.code).toBe(0);
    const viaSsh = await sh("ssh", lab.sshArgv(v6, "root", "cat /etc/iptables/rules.v4"));
    expect(viaSsh.stdout).toBe(`${lab.id}-h0\n`);
    expect(existsSync(`${v6.etcIptablesDir}/rules.v4`)).toBe(true);
    expect(existsSync(`${lab.hosts[1].etcIptablesDir}/rules.v4`)).toBe(false);
    const other = await lab.hostExec(lab.hosts[1], "cat /etc/iptables/rules.v4");
    expect(other.code).not.toBe(0);
  });

  test("a host's SSH sessions do not run this machine's /root/.bashrc (it belongs to another machine)", async () => {
    const r = await sh("ssh", lab.sshArgv(v6, "root", "wc -c < /root/.bashrc 2>/dev/null || echo none"));
    expect(r.code).toBe(0);
    expect(["0", "none"]).toContain(r.stdout.trim());
  });

  test("each host has its own provider lock, as real hosts have their own /run", async () => {
    // Hold h0's lock from an SSH session; h1 (same lab) and the machine itself must not be blocked.
    // The holder says "held" once it has the lock and keeps it until we close its stdin: no
    // guess at how long an SSH login takes on a loaded machine.
    const lock = "/run/docker-port-allowlist.lock";
    const holder = spawn(
      "ssh",
      lab.sshArgv(v6, "root", `flock -n ${lock} sh -c 'echo held; cat >/dev/null'; echo "rc=$?"`),
      {
        stdio: ["pipe", "pipe", "inherit"],
      },
    );
    let out = "";
    const exited = new Promise<void>((resolve) => holder.on("close", () => resolve()));
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on("data", (b: Buffer) => {
        out += b.toString();
        if (out.includes("held\n")) resolve();
      });
      holder.on("close", () => reject(new Error(`the lock holder ended before it held the lock: ${out}`)));
    });
    const sameHost = await lab.hostExec(v6, `flock -n ${lock} true; echo $?`);
    expect(sameHost.stdout.trim()).toBe("1");
    const otherHost = await lab.hostExec(lab.hosts[1], `flock -n ${lock} true; echo $?`);
    expect(otherHost.stdout.trim()).toBe("0");
    const machine = await sh("sh", ["-c", `flock -n ${lock} true; echo $?`]);
    expect(machine.stdout.trim()).toBe("0");
    holder.stdin!.end();
    await exited;
    expect(out).toBe("held\nrc=0\n");
  });

  test("(e) after down() no namespace, process, mount or veth of the lab is left", async () => {
    const id = lab4.id;
    const dockerPid = await sh("cat", [`${lab4.dir}/h0/docker.pid`]);
    const pids = [v4.sshdPid, Number(dockerPid.stdout.trim())];
    expect(pids.every(alive)).toBe(true);
    await lab4.down();
    expect((await netnsList()).filter((n) => n.startsWith(`${id}-`))).toEqual([]);
    expect(pids.filter(alive)).toEqual([]);
    const ps = await sh("ps", ["-eo", "args"]);
    expect(ps.stdout.split("\n").filter((l) => l.includes(`/labs/${id}/`))).toEqual([]);
    const mounts = await sh("cat", ["/proc/mounts"]);
    expect(mounts.stdout.split("\n").filter((l) => l.includes(`/labs/${id}/`))).toEqual([]);
    expect((await sh("ip", ["link", "show", `${id}r`])).code).not.toBe(0);
    expect(existsSync(lab4.dir)).toBe(false);
    // The other lab is untouched.
    expect(await lab.probe("c0", v6, 8080, "tcp")).toBe(true);
  });
});

describe("Docker 29 hosts, one per firewall backend", () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab({
      docker: 2,
      light: 0,
      clients: 1,
      ipv6: true,
      dockerVersion: "29",
      firewallBackend: ["iptables", "nftables"],
    });
  });
  afterAll(async () => {
    await lab?.down();
  });

  // From the API itself: the docker client on PATH may be older than the FirewallBackend field.
  const info = async (h: LabHost) =>
    (
      await lab.hostExec(
        h,
        `curl -s --unix-socket "\${DOCKER_HOST#unix://}" http://docker/info | jq -r '"\\(.ServerVersion) \\(.FirewallBackend.Driver)"'`,
      )
    ).stdout.trim();

  test("each runs dockerd 29 with its own containerd and the chosen backend, and publishes its ports", async () => {
    const [ipt, nft] = lab.hosts;
    expect(ipt).toMatchObject({
      kind: "docker",
      layout: "docker29",
      dockerVersion: "29",
      firewallBackend: "iptables",
    });
    expect(nft).toMatchObject({
      kind: "docker",
      layout: "docker29",
      dockerVersion: "29",
      firewallBackend: "nftables",
    });
    expect(await info(ipt)).toMatch(/^29\.\d+\.\d+ iptables$/);
    expect(await info(nft)).toMatch(/^29\.\d+\.\d+ nftables$/);
    // Docker's chains where the backend is iptables; its own nftables tables and no DOCKER-USER where it is nftables.
    expect((await lab.hostExec(ipt, "iptables -S DOCKER-USER")).code).toBe(0);
    expect((await lab.hostExec(nft, "iptables -S DOCKER-USER")).code).not.toBe(0);
    expect((await lab.hostExec(nft, "nft list tables")).stdout).toContain("table ip docker-bridges");
    const ps = await sh("ps", ["-eo", "args"]);
    for (const h of lab.hosts) {
      expect(ps.stdout).toContain(`containerd --config ${lab.dir}/${h.name}/containerd.toml`);
      for (const [port, proto] of [
        [8080, "tcp"],
        [5353, "udp"],
      ] as const) {
        for (const family of [4, 6] as const)
          expect(await lab.probe("c0", h, port, proto, family)).toBe(true);
      }
    }
  });

  test("a rebooted Docker 29 host of either backend comes back with its backend and its containers", async () => {
    for (const h of lab.hosts) {
      await lab.reboot(h);
      expect(await info(h)).toMatch(new RegExp(`^29\\.\\d+\\.\\d+ ${h.firewallBackend}$`));
      expect(await lab.probe("c0", h, 8080, "tcp")).toBe(true);
    }
  });
});
