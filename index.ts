/**
 * The component package's entry (package.json `main`, PulumiPlugin.yaml): the components that
 * `pulumi package add` offers to programs in any language. TypeScript programs import the package
 * by name, which resolves through package.json `exports` to provider/index.ts instead.
 */
export { Action, Allowlist, AllowlistFleet, Ipv6Mode, Protocol } from "./provider/pulumi/component";
