/**
 * Pulumi `Input`s all the way down, the way Pulumi's generated SDKs type their arguments
 * (`@pulumi/command`'s `remote.ConnectionArgs`, for one): every field, every array element and every
 * nested field may be a plain value, a Promise or an Output, so `sources: [eip.publicIp, "198.18.1.0/24"]`
 * and `connection: { host: server.ipv4, privateKey: cfg.requireSecret("key") }` type-check as they are.
 * Plain values stay valid: a plain `T` is always assignable to `InputsOf<T>`.
 */
import type * as pulumi from "@pulumi/pulumi";

/**
 * A value of type `T` that may be an Input at every level: arrays of Inputs, objects of Inputs.
 * Unions of scalars (`number | string`) stay one `Input<number | string>`, so an
 * `Output<number | string>` is accepted too.
 */
export type InputOf<T> = pulumi.Input<
  [T] extends [readonly (infer E)[]] ? readonly InputOf<E>[] : [T] extends [object] ? InputsOf<T> : T
>;

/**
 * `T`'s fields, each an {@link InputOf} its type. Optional fields stay optional and also take an
 * Input that may resolve to `undefined` (`cfg.getNumber("port")` as an Output), as they always did.
 */
export type InputsOf<T> = {
  readonly [K in keyof T]: undefined extends T[K]
    ? InputOf<NonNullable<T[K]>> | pulumi.Input<T[K]>
    : InputOf<T[K]>;
};
