/**
 * Pure parts of the apply step: the undo payload, the conntrack cuts, the output protocol and
 * the quoting of the remote command.
 */
import { execFileSync } from "child_process";
import { conntrackCuts, renderRollback, allowedSources } from "../../provider/host/rollback";
import { parseSections, remoteCommand } from "../../provider/host/scripts";
import { shellQuote } from "../../provider/host/ssh";

const T = '-m comment --comment "dpa:web"';
const before = [
  "*filter",
  ":FORWARD DROP [0:0]",
  ":DOCKER-USER - [0:0]",
  ":DPA-web - [0:0]",
  "-A FORWARD -j DOCKER-USER",
  `-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 ${T} -j DPA-web`,
  "-A DOCKER-USER -s 198.18.77.0/24 -j DROP",
  `-A DPA-web -s 198.18.1.0/24 ${T} -j RETURN`,
  `-A DPA-web -s 198.18.2.7/32 ${T} -j RETURN`,
  `-A DPA-web ${T} -j DROP`,
  "COMMIT",
  "",
].join("\n");

describe("renderRollback", () => {
  test("restores DOCKER-USER and the owned chain verbatim from the snapshot, nothing else", () => {
    expect(renderRollback(before, "*filter\n:DPA-web - [0:0]\nCOMMIT\n", "web")).toBe(
      [
        "*filter",
        ":DOCKER-USER - [0:0]",
        ":DPA-web - [0:0]",
        `-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 ${T} -j DPA-web`,
        "-A DOCKER-USER -s 198.18.77.0/24 -j DROP",
        `-A DPA-web -s 198.18.1.0/24 ${T} -j RETURN`,
        `-A DPA-web -s 198.18.2.7/32 ${T} -j RETURN`,
        `-A DPA-web ${T} -j DROP`,
        "COMMIT",
        "",
      ].join("\n"),
    );
  });

  test("deletes a chain the snapshot lacked, and first the FORWARD jump the payload added", () => {
    const bare = "*filter\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\nCOMMIT\n";
    const payload =
      '*filter\n:DOCKER-USER - [0:0]\n-I FORWARD 1 -m comment --comment "dpa::forward" -j DOCKER-USER\nCOMMIT\n';
    expect(renderRollback(bare, payload, "web")).toBe(
      [
        "*filter",
        '-D FORWARD -m comment --comment "dpa::forward" -j DOCKER-USER',
        ":DOCKER-USER - [0:0]",
        ":DPA-web - [0:0]",
        "-X DOCKER-USER",
        "-X DPA-web",
        "COMMIT",
        "",
      ].join("\n"),
    );
  });
});

describe("conntrackCuts", () => {
  test("cuts exactly the sources that lost access, per policed port", () => {
    const after = before.replace(`-A DPA-web -s 198.18.2.7/32 ${T} -j RETURN\n`, "");
    expect(allowedSources(after, "web")).toEqual(["198.18.1.0/24"]);
    expect(conntrackCuts(before, after, "web", "ipv4")).toEqual([
      "-f ipv4 -p tcp --orig-port-dst 8080 -s 198.18.2.7/32",
    ]);
    expect(conntrackCuts(before, before, "web", "ipv4")).toEqual([]);
  });

  test("never emits a token outside the safe set, even from a hostile save text", () => {
    const hostile = before.replace("198.18.2.7/32", "$(reboot)");
    expect(conntrackCuts(hostile, "", "web", "ipv4")).toEqual([
      "-f ipv4 -p tcp --orig-port-dst 8080 -s 198.18.1.0/24",
    ]);
  });
});

describe("remote command and output protocol", () => {
  test("passes every argument through bash verbatim, quotes included", () => {
    const nasty = ["a'b", '"; rm -rf / #', "$(id)", "`id`", "x y", ""];
    const cmd = remoteCommand('printf "%s\\n" "$@"', "dpa-test", nasty, false);
    const out = execFileSync("sh", ["-c", cmd], { encoding: "utf8" });
    expect(out).toBe(nasty.map((a) => `${a}\n`).join(""));
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(remoteCommand("true", "n", [], true)).toBe("sudo -n -- bash -c 'true' 'n'");
  });

  test("splits sections and drops the blank tail of empty output", () => {
    const s = parseSections("noise\n@@DPA:save4 rc=0\n*filter\nCOMMIT\n@@DPA:save6 rc=1\n\n@@DPA:end\n");
    expect(s.get("save4")).toEqual({ header: "save4 rc=0", body: "*filter\nCOMMIT\n" });
    expect(s.get("save6")).toEqual({ header: "save6 rc=1", body: "" });
    expect(s.has("end")).toBe(true);
    expect(s.has("noise")).toBe(false);
  });
});
