/**
 * One Docker host, one published port, a few allowed sources.
 *
 *   pulumi config set --path 'connection.host' 203.0.113.10
 *   pulumi config set --path 'connection.hostKey' "$(ssh-keyscan -t ed25519 203.0.113.10 | cut -d' ' -f2-)"
 *   cat ~/.ssh/id_ed25519 | pulumi config set --secret privateKey
 *   pulumi config set --path 'sources[0]' 198.51.100.0/24
 *   pulumi preview --diff && pulumi up
 *
 * Inside this repository "docker-port-allowlist" resolves to the compiled package (`npm run build`).
 */
import * as pulumi from "@pulumi/pulumi";

import { DockerPortAllowlist, type ConnectionArgs } from "docker-port-allowlist";

const config = new pulumi.Config();

const allowlist = new DockerPortAllowlist("web", {
  // host, port, user, hostKey... as in provider/args.ts; the key comes in as a secret.
  connection: {
    ...config.requireObject<ConnectionArgs>("connection"),
    privateKey: config.requireSecret("privateKey"),
  },
  // The published host port: the left side of `docker run -p 8080:80`.
  port: config.getNumber("port") ?? 8080,
  protocols: ["tcp"],
  sources: config.requireObject<string[]>("sources"),
});

/** The chain this allowlist owns on the host. */
export const chain = allowlist.chain;
/** The rule lines now on the host, exactly as iptables-save prints them. */
export const rules = allowlist.rules;
/** Anything worth knowing about the host (fail-open FORWARD chain, foreign rules above ours...). */
export const hostFindings = allowlist.hostFindings;
