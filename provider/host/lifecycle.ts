/**
 * Compatibility path, not SSH code: stacks created by 0.1.0 captured this module's absolute path
 * (bin/provider/host/lifecycle) in their state, and `pulumi refresh`/`destroy` run the provider
 * stored there. The Pulumi provider itself lives in ../pulumi/lifecycle.ts.
 */
export * from "../pulumi/lifecycle";
