/**
 * Pulumi mocks that record every resource a program registers (type, name, and the inputs as the
 * engine would receive them), for unit tests of the resource and the fleet. Mocks see neither
 * dependsOn nor aliases, and lift a nested secret to the whole top-level property: what the real
 * engine does with those is tested in test/engine/.
 */
import * as pulumi from "@pulumi/pulumi";

export interface Registered {
  readonly type: string;
  readonly name: string;
  readonly inputs: Record<string, unknown>;
}

/** Installs the mocks (call in `beforeAll`) and returns the list they fill, in registration order. */
export function recordRegistrations(): Registered[] {
  const registered: Registered[] = [];
  pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        return { id: `${args.name}-id`, state: args.inputs };
      },
      call: (args) => args.inputs,
    },
    "project",
    "stack",
    false,
  );
  return registered;
}
