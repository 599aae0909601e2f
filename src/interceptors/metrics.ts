import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import { codeName } from "../errors.js";
import { toConnectError } from "./errors.js";
import type { PoolStats } from "../db/database.js";
import type { Verifier } from "../verify/verifier.js";

/** What the metrics read at scrape time rather than count as they happen. */
export interface MetricsSources {
  verifier: Verifier;
  poolStats: (() => PoolStats) | undefined;
}

/**
 * Running counts by two label values, kept in plain maps on the call path and copied
 * into a prom-client counter when it is scraped: no label object, hash string or
 * validation per call. Both label sets are bounded (methods × codes, verdicts, outcomes).
 */
class Tally {
  private readonly totals = new Map<string, Map<string, number>>();

  add(first: string, second = ""): void {
    let inner = this.totals.get(first);
    if (inner === undefined) this.totals.set(first, (inner = new Map()));
    inner.set(second, (inner.get(second) ?? 0) + 1);
  }

  /** A prom-client counter with one or two `labelNames` whose scrape copies these counts. */
  counter<L extends string>(config: { name: string; help: string; labelNames: [L] | [L, L]; registers: Registry[] }): Counter<L> {
    const totals = this.totals;
    const [a, b] = config.labelNames;
    return new Counter<L>({
      ...config,
      collect() {
        this.reset();
        for (const [first, inner] of totals) {
          for (const [second, n] of inner) this.inc((b === undefined ? { [a]: first } : { [a]: first, [b]: second }) as Partial<Record<L, string>>, n);
        }
      },
    });
  }
}

/**
 * The Prometheus metrics of one server. Each server has its own registry, so
 * several servers in one process (tests) never share or clash over counters.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly rpcRequests = new Tally();
  private readonly rpcDuration: Histogram<"method" | "code">;
  private readonly verifyOutcomes = new Tally();
  private readonly invalidationLag: Histogram;
  private readonly fastPathRequests = new Tally();

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "apikeys_" });
    this.rpcRequests.counter({
      name: "apikeys_rpc_requests_total",
      help: "RPCs handled (Connect, gRPC, gRPC-Web and REST), by method and outcome code",
      labelNames: ["method", "code"],
      registers,
    });
    this.rpcDuration = new Histogram({
      name: "apikeys_rpc_duration_seconds",
      help: "Time to handle an RPC (to the first response message for streams), by method and outcome code",
      labelNames: ["method", "code"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.verifyOutcomes.counter({
      name: "apikeys_verify_outcomes_total",
      help: "VerifyToken verdicts, by verdict code",
      labelNames: ["code"],
      registers,
    });
    this.invalidationLag = new Histogram({
      name: "apikeys_invalidation_lag_seconds",
      help: "Time from a write queueing an invalidation to this instance evicting it",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers,
    });
    this.fastPathRequests.counter({
      name: "apikeys_fast_path_requests_total",
      help: "VerifyToken and TestApiKey calls the fast path answered (served) or handed on to the generic path after reading their body (handed_on)",
      labelNames: ["outcome"],
      registers,
    });
    const { verifier } = sources;
    // The cache keeps its own running totals; a scrape copies them.
    const cacheCounter = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    cacheCounter("apikeys_cache_hits_total", "Verifications answered from the in-memory cache", () => verifier.cache.hits);
    cacheCounter("apikeys_cache_misses_total", "Verifications that had to read the database", () => verifier.cache.misses);
    cacheCounter("apikeys_cache_evictions_total", "Cache entries evicted to stay within APIKEYS_CACHE_MAX_ENTRIES", () => verifier.cache.evictions);
    cacheCounter("apikeys_auth_throttled_total", "Authentication attempts refused because their client address failed too often", () => verifier.failures.throttled);
    new Gauge({
      name: "apikeys_cache_entries",
      help: "Keys currently cached",
      registers,
      collect() {
        this.set(verifier.cache.size);
      },
    });
    new Gauge({
      name: "apikeys_invalidation_listening",
      help: "1 while the invalidation listener is connected (the cache is in use), 0 otherwise",
      registers,
      collect() {
        this.set(verifier.isListening ? 1 : 0);
      },
    });
    new Gauge({
      name: "apikeys_throttled_addresses",
      help: "Client addresses currently refused for failing authentication too often",
      registers,
      collect() {
        this.set(verifier.failures.blockedCount());
      },
    });
    const { poolStats } = sources;
    if (poolStats !== undefined) {
      new Gauge({
        name: "apikeys_db_pool_connections",
        help: "Postgres pool connections, by state (idle, busy)",
        labelNames: ["state"],
        registers,
        collect() {
          const stats = poolStats();
          this.set({ state: "idle" }, stats.idle);
          this.set({ state: "busy" }, stats.total - stats.idle);
        },
      });
      new Gauge({
        name: "apikeys_db_pool_waiting",
        help: "Queries waiting for a free Postgres pool connection",
        registers,
        collect() {
          this.set(poolStats().waiting);
        },
      });
    }
  }

  /** Counts every RPC and, for VerifyToken, its verdict; place it outside the auth interceptor. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      const rpc = `${req.service.typeName}/${req.method.name}`;
      const started = performance.now();
      try {
        const res = await next(req);
        if (!res.stream) this.callAnswered(req.method, res.message);
        this.callEnded(rpc, "ok", started);
        return res;
      } catch (err) {
        this.callEnded(rpc, codeName(toConnectError(err).code), started);
        throw err;
      }
    };
  }

  /** Counts a unary call's answer: for VerifyToken, its verdict. */
  callAnswered(method: DescMethod, message: unknown): void {
    if (method.name !== "VerifyToken") return;
    const verdict = (message as { code?: VerifyCode }).code ?? VerifyCode.UNSPECIFIED;
    this.verifyOutcomes.add(VerifyCode[verdict] ?? String(verdict));
  }

  /** Counts one RPC that ended with `code` ("ok" or a code name) and its duration since `started` (performance.now()). */
  callEnded(rpc: string, code: string, started: number): void {
    const seconds = (performance.now() - started) / 1000;
    this.rpcDuration.observe({ method: rpc, code }, seconds);
    this.rpcRequests.add(rpc, code);
  }

  /** Counts one request the fast path took: answered itself, or handed on with its body. */
  observeFastPath(outcome: "served" | "handed_on"): void {
    this.fastPathRequests.add(outcome);
  }

  /** Records how long an invalidation took to arrive, from the `at` its writer stamped on it. */
  observeInvalidation(payload: string): void {
    let at: unknown;
    try {
      at = (JSON.parse(payload) as { at?: unknown }).at;
    } catch {
      return;
    }
    if (typeof at === "number" && Number.isFinite(at)) this.invalidationLag.observe(Math.max(0, Date.now() - at) / 1000);
  }
}
