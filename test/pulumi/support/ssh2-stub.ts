/**
 * The provider's lifecycle against a stub host (the real scripts on stub tools, see
 * ../../host/stubhost.ts) behind a real SSH server (ssh2 on loopback): made fresh before each test
 * of the file that calls {@link stubHostOverSsh}, with IPv6 off on the host and the provider's
 * stderr captured, and torn down after it.
 */
import { ed25519, startSsh2Host, type Ssh2Host } from "../../host/ssh2host";
import { StubHost, type StubHostOptions } from "../../host/stubhost";
import { captureStderr } from "../../host/support";

export interface StubOverSsh {
  /** The host, for the current test. */
  stub: StubHost;
  /** The SSH server in front of it (any key is accepted). */
  server: Ssh2Host;
  /** What the provider wrote on stderr during the current test (warnings, progress). */
  stderr: string[];
}

/** A client key for the connection: the server accepts any. */
export const CLIENT_KEY = ed25519().private;

/** Registers the per-test setup; `prepare` fills the host's state before the server starts. */
export function stubHostOverSsh(
  options: StubHostOptions = {},
  prepare?: (stub: StubHost) => void,
): StubOverSsh {
  const env = {} as StubOverSsh;
  beforeEach(async () => {
    env.stub = new StubHost(options);
    env.stub.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
    prepare?.(env.stub);
    env.server = await startSsh2Host({ shell: env.stub.shell() });
    env.stderr = captureStderr();
  });
  afterEach(async () => {
    jest.restoreAllMocks();
    await env.server.close();
    env.stub.remove();
  });
  return env;
}
