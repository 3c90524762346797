/**
 * Bootstrap a host for persistence, then declare its allowlist, over ONE connection object.
 *
 * `@pulumi/command`'s remote.Command installs and enables iptables-persistent (so the rules the
 * allowlist saves to /etc/iptables/rules.v4 and rules.v6 are restored at boot); the allowlist
 * `dependsOn` it. Our ConnectionArgs is shaped like command's remote.Connection, so the same object
 * goes to both.
 *
 * NOT RUN IN THIS REPOSITORY'S CI: see README.md (the pulumi-resource-command plugin cannot be built
 * offline here).
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { DockerPortAllowlist } from "docker-port-allowlist";

const config = new pulumi.Config();
const connection = {
  host: config.require("host"),
  user: config.get("user") ?? "root",
  privateKey: config.requireSecret("privateKey"),
};

// Idempotent: apt-get install does nothing when the package is there. The debconf answers stop
// the package from saving (and later restoring) whatever rules happen to be live at install time.
const persistence = new command.remote.Command("iptables-persistent", {
  connection,
  create: [
    "set -e",
    "echo iptables-persistent iptables-persistent/autosave_v4 boolean false | debconf-set-selections",
    "echo iptables-persistent iptables-persistent/autosave_v6 boolean false | debconf-set-selections",
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q iptables-persistent",
    "systemctl enable netfilter-persistent",
  ].join("\n"),
});

export const web = new DockerPortAllowlist(
  "web",
  {
    connection,
    port: 8080,
    sources: config.requireObject<string[]>("sources"),
    persist: true, // the default; shown because it is the point of this example
  },
  { dependsOn: [persistence] },
).rules;
