/**
 * NATS decentralized authentication (JWTs) made at test time: an operator, accounts signed by
 * it and users signed by an account, each with its own nkeys, and the users' `.creds` files
 * as nsc writes them. {@link NatsCluster.start} with `auth: { operator, accounts }` runs a
 * nats-server that trusts the operator and knows only the accounts given (a memory resolver
 * preloaded with their JWTs); a user of any other account is refused.
 *
 * Nothing here is kept: every test makes its own keys.
 *
 * ```ts
 * const operator = await NatsOperator.create("pm-test");
 * const account = await operator.account("PM");
 * const user = await account.user("publisher");
 * await using cluster = await NatsCluster.start({ auth: { operator, accounts: [account] } });
 * await Deno.writeTextFile(file, user.creds); // for --nats-creds
 * ```
 *
 * @module
 */

import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";

/**
 * An operator: the root of trust a nats-server is configured with (`operator: <jwt>`), with
 * its system account (nats-server 2.9 will not start JetStream in operator mode without one).
 */
export class NatsOperator {
  /** The operator's self-signed JWT. */
  readonly jwt: string;
  /** The system account, `system_account` in the server's config (always preloaded). */
  system!: NatsAccount;
  readonly #keys: KeyPair;

  private constructor(jwt: string, keys: KeyPair) {
    this.jwt = jwt;
    this.#keys = keys;
  }

  /** A new operator with fresh keys, named `name` in its JWT, and its system account SYS. */
  static async create(name: string): Promise<NatsOperator> {
    const keys = createOperator();
    const operator = new NatsOperator(await encodeOperator(name, keys), keys);
    operator.system = await operator.#account("SYS", false);
    return operator;
  }

  /**
   * A new account signed by this operator. The server knows it only if it is among the
   * cluster's `accounts`; JetStream is allowed in it without limits.
   */
  account(name: string): Promise<NatsAccount> {
    return this.#account(name, true);
  }

  /** An account signed by this operator; the system account may not have JetStream. */
  async #account(name: string, jetStream: boolean): Promise<NatsAccount> {
    const keys = createAccount();
    // Unlimited, as nsc makes an account: a limit left out of the JWT is 0 (nothing allowed).
    const limits = {
      subs: -1,
      data: -1,
      payload: -1,
      imports: -1,
      exports: -1,
      conn: -1,
      leaf: -1,
    };
    const jetStreamLimits = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };
    const jwt = await encodeAccount(name, keys, {
      limits: { ...limits, wildcards: true, ...(jetStream ? jetStreamLimits : {}) },
    }, { signer: this.#keys });
    return new NatsAccount(jwt, keys);
  }
}

/** An account: its users share one subject space. */
export class NatsAccount {
  /** The account's JWT, signed by its operator. */
  readonly jwt: string;
  /** The account's public nkey (A…), the key of its JWT in `resolver_preload`. */
  readonly publicKey: string;
  readonly #keys: KeyPair;

  /** Made by {@link NatsOperator.account}. */
  constructor(jwt: string, keys: KeyPair) {
    this.jwt = jwt;
    this.publicKey = keys.getPublicKey();
    this.#keys = keys;
  }

  /** A new user of this account, allowed every subject. */
  async user(name: string): Promise<NatsUser> {
    const keys = createUser();
    const jwt = await encodeUser(name, keys, this.#keys);
    return { publicKey: keys.getPublicKey(), creds: new TextDecoder().decode(fmtCreds(jwt, keys)) };
  }
}

/** A user's public nkey (U…) and `.creds` file text: its JWT and nkey seed, as nsc writes them. */
export interface NatsUser {
  publicKey: string;
  creds: string;
}
