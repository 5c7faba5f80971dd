"""Benchmark: this pack's LLM retry/reroute policy against LiteLLM's Router and a
tenacity-wrapped client, on the same fault-injecting provider, in one run.

    /work/venvs/bench-llm/bin/python bench/retry.py --quick

Every strategy serves the same open-loop workload (requests arrive at a fixed
rate, each on its own thread) against a fresh copy of the same fault script on
one loopback server (tests/synthralos_tests/llm_provider.py): a primary target
(OpenAI dialect) and a fallback (Anthropic dialect). Per scenario and strategy
it reports the success rate, the p95 end-to-end latency of a request
(including every wait) and the wasted calls (provider calls that did not
produce the answer). Time is REAL wall-clock time with every delay scaled
down (backoff base 0.05 s, cap 1 s, breaker cooldown 1 s, Retry-After around
0.2-1 s) so that --quick stays under two minutes.

Strategies:
* ours: `llm_routing.next_step` (record -> decide -> breaker check) around
  `llm_client.call_llm`, exactly what the llm_retry workflow runs per
  iteration, with breakers shared through a real redis-server. The workflow
  rounds each delay up to whole seconds (Orquesta task delays are integers);
  here the delays are used as computed, since everything is scaled down.
  retry_after_cap_s is 0.25 s (latency-first: a longer Retry-After sends the
  request to the next target while the limited one cools down for everyone);
  `--retry-after-cap 2` gives the pack's default ratio.
* litellm_router: litellm.Router with the same chain as a fallback, the same
  attempts (num_retries=2), cooldowns after failures (allowed_fails=2, i.e.
  the 3rd failure cools a deployment, like ours with min_requests=3;
  cooldown_time) and the same timeout; its Python backoff constants
  (INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, JITTER) are scaled like ours. Note:
  LiteLLM 1.110's compiled router core sleeps 0.5 s * 2^n + up to 0.75 s of
  jitter between retries whatever those are set to, so its latencies carry
  unscaled backoff; its wasted calls compare directly.
* tenacity: requests + tenacity retry (stop_after_attempt(3),
  wait_random_exponential with the same base and cap), then the fallback.

Writes bench/results/retry.json:
{"<scenario>": {"ours": {"success_rate", "p95_latency_s", "wasted_calls"}, "litellm_router": {...}, "tenacity": {...}}}
"""

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "actions", "lib"), os.path.join(ROOT, "tests")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map from the internet

import requests  # noqa: E402

from synthralos_lib.llm import policy as llm_policy  # noqa: E402
from synthralos_lib.state.config import load_config  # noqa: E402
from synthralos_lib.llm.client import call_llm  # noqa: E402
from synthralos_lib.llm.routing import make_policy, next_step  # noqa: E402
from synthralos_lib.state.store import RedisStore  # noqa: E402
from synthralos_tests.llm_provider import LLMProviderServer  # noqa: E402

PRIMARY_KEY = "sk-bench-primary-0000"
FALLBACK_KEY = "sk-ant-bench-fallback-0000"
MESSAGES = [{"role": "user", "content": "Summarise the incident in one sentence."}]
TIMEOUT_S = 2.0
MAX_ATTEMPTS = 3
BASE_DELAY_S = 0.05
MAX_DELAY_S = 1.0
# Longest Retry-After ours waits out on the same target before moving to the next
# one: 5 base delays, a latency-first profile (the pack's default ratio,
# 120 s against a 60 s backoff cap, would be 2.0 here: `--retry-after-cap 2`).
RETRY_AFTER_CAP_S = 0.25
COOLDOWN_S = 1

# LiteLLM reads its backoff constants from the environment when imported: scale them like ours.
os.environ.setdefault("INITIAL_RETRY_DELAY", str(BASE_DELAY_S))
os.environ.setdefault("MAX_RETRY_DELAY", str(MAX_DELAY_S))
os.environ.setdefault("JITTER", str(BASE_DELAY_S))


# -- scenarios ---------------------------------------------------------------
# Each sets up the primary endpoint "p" (the fallback "f" is healthy unless said).
# Times are seconds from the first request.

def transient_30pct(server, duration):
    server.set_error_rate("p", 0.3, ["server_error", "bad_gateway", "unavailable"], seed=7)


def primary_outage(server, duration):
    server.add_outage("p", duration * 0.2, duration * 0.7, "unavailable")


def rate_limited(server, duration):
    # Both targets enforce a real sliding-window limit; together they carry the load.
    server.set_rate_limit("p", 6, 1.0)
    server.set_rate_limit("f", 6, 1.0)


def quota_exhausted_primary(server, duration):
    server.set_default("p", "quota")


SCENARIOS = [
    ("transient_30pct", transient_30pct),
    ("primary_outage", primary_outage),
    ("rate_limited", rate_limited),
    ("quota_exhausted_primary", quota_exhausted_primary),
]


# -- strategies --------------------------------------------------------------

class Ours(object):
    name = "ours"

    retry_after_cap_s = RETRY_AFTER_CAP_S

    def __init__(self, server, redis_url):
        self.settings = load_config({
            "llm_targets": [
                dict(server.target("p"), priority=1, timeout_s=TIMEOUT_S),
                dict(server.target("f"), priority=2, timeout_s=TIMEOUT_S),
            ],
            "retry": {"max_attempts": MAX_ATTEMPTS, "base_delay_s": BASE_DELAY_S, "max_delay_s": MAX_DELAY_S,
                      "jitter": "full", "retry_after_cap_s": self.retry_after_cap_s},
            "circuit_breaker": {"window_s": 5, "min_requests": 3, "failure_rate_threshold": 0.5,
                                "cooldown_s": COOLDOWN_S, "max_cooldown_s": 8},
            "redis": {"url": redis_url, "key_prefix": "bench:%d:" % int(time.time() * 1000)},
        })
        self.store = RedisStore(redis_url, self.settings.section("redis")["key_prefix"])
        self.policy = make_policy(self.settings)
        self.chain = ["p", "f"]
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        self.session.mount("http://", adapter)

    def request(self):
        decision = next_step(self.settings, self.store, self.chain, None, [], self.policy)
        while decision["action"] in (llm_policy.RETRY, llm_policy.NEXT_TARGET):
            if decision["delay_s"]:
                time.sleep(decision["delay_s"])
            target = self.settings.llm_target(decision["target"])
            outcome = call_llm(target, MESSAGES, max_tokens=64, session=self.session)
            decision = next_step(self.settings, self.store, self.chain, outcome, decision["history"], self.policy)
        return decision["action"] == llm_policy.DONE


class LiteLLMRouter(object):
    name = "litellm_router"

    def __init__(self, server, redis_url):
        import litellm
        from litellm import Router

        litellm.suppress_debug_info = True
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
        logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)
        self.router = Router(
            model_list=[
                {"model_name": "primary", "litellm_params": {
                    "model": "openai/gpt-4o-mini", "api_base": server.url + "/p/v1", "api_key": PRIMARY_KEY,
                    "max_retries": 0, "timeout": TIMEOUT_S}},
                {"model_name": "fallback", "litellm_params": {
                    # LiteLLM appends /v1/messages to an Anthropic api_base.
                    "model": "anthropic/claude-3-5-haiku-latest", "api_base": server.url + "/f",
                    "api_key": FALLBACK_KEY, "max_retries": 0, "timeout": TIMEOUT_S}},
            ],
            fallbacks=[{"primary": ["fallback"]}],
            num_retries=MAX_ATTEMPTS - 1,
            timeout=TIMEOUT_S,
            allowed_fails=2,
            cooldown_time=COOLDOWN_S,
        )

    def request(self):
        try:
            response = self.router.completion(model="primary", messages=MESSAGES, max_tokens=64)
        except Exception:
            return False
        return bool(response.choices[0].message.content)


class Tenacity(object):
    name = "tenacity"

    def __init__(self, server, redis_url):
        import tenacity

        self.targets = [server.target("p"), server.target("f")]
        self.session = requests.Session()
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64))
        self.call = tenacity.retry(
            stop=tenacity.stop_after_attempt(MAX_ATTEMPTS),
            wait=tenacity.wait_random_exponential(multiplier=BASE_DELAY_S, max=MAX_DELAY_S),
            reraise=True,
        )(self._call_once)

    def _call_once(self, target):
        if target["kind"] == "openai":
            url = target["base_url"] + "/chat/completions"
            headers = {"authorization": "Bearer " + target["api_key"]}
            body = {"model": target["model"], "messages": MESSAGES, "max_tokens": 64}
        else:
            url = target["base_url"] + "/messages"
            headers = {"x-api-key": target["api_key"], "anthropic-version": "2023-06-01"}
            body = {"model": target["model"], "messages": MESSAGES, "max_tokens": 64}
        response = self.session.post(url, json=body, headers=headers, timeout=TIMEOUT_S)
        response.raise_for_status()
        data = response.json()
        return data["choices"][0]["message"]["content"] if target["kind"] == "openai" else data["content"][0]["text"]

    def request(self):
        for target in self.targets:
            try:
                return bool(self.call(target))
            except Exception:
                continue
        return False


STRATEGIES = [Ours, LiteLLMRouter, Tenacity]


# -- running -----------------------------------------------------------------

def p95(values):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def run_one(strategy_cls, scenario, requests_n, rate, redis_url):
    duration = requests_n / float(rate)
    server = LLMProviderServer()
    try:
        server.add_endpoint("p", "openai", PRIMARY_KEY, region="us-east")
        server.add_endpoint("f", "anthropic", FALLBACK_KEY, region="eu-west")
        strategy = strategy_cls(server, redis_url)
        strategy.request()  # warm-up (imports, connection pools) before the clock starts
        server.reset()
        server.add_endpoint("p", "openai", PRIMARY_KEY, region="us-east")
        server.add_endpoint("f", "anthropic", FALLBACK_KEY, region="eu-west")
        scenario(server, duration)

        results = [None] * requests_n
        threads = []

        def one(i):
            started = time.monotonic()
            ok = strategy.request()
            results[i] = (ok, time.monotonic() - started)

        server.reset_clock()
        start = time.monotonic()
        for i in range(requests_n):
            wait = start + i / float(rate) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            thread = threading.Thread(target=one, args=(i,))
            thread.daemon = True
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(60)
        done = [r for r in results if r is not None]
        successes = sum(1 for ok, _ in done if ok)
        calls = len(server.requests())
        served_by_primary = sum(1 for c in server.calls("p") if c["status"] == 200)
        metrics = {
            "success_rate": round(successes / float(requests_n), 4),
            "p95_latency_s": round(p95([lat for _, lat in done]), 3),
            "wasted_calls": calls - successes,
        }
        # Printed, not in the JSON: how much of the traffic the primary still served.
        return metrics, round(served_by_primary / float(max(successes, 1)), 3)
    finally:
        server.close()


def start_redis():
    """A private redis-server on a free loopback port (the pack's breakers need a shared store)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "redis://127.0.0.1:%d/0" % port
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workload (finishes in under two minutes)")
    parser.add_argument("--requests", type=int, help="requests per scenario and strategy")
    parser.add_argument("--rate", type=float, default=10.0, help="request arrivals per second")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--retry-after-cap", type=float, default=RETRY_AFTER_CAP_S,
                        help="ours: longest Retry-After honoured before moving to the next target (s)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "retry.json"))
    args = parser.parse_args(argv)
    Ours.retry_after_cap_s = args.retry_after_cap
    requests_n = args.requests or (40 if args.quick else 150)
    chosen = [s for s in SCENARIOS if not args.only or s[0] in args.only.split(",")]

    redis_proc, redis_url = start_redis()
    results, shares = {}, {}
    began = time.monotonic()
    try:
        for name, scenario in chosen:
            results[name] = {}
            for strategy_cls in STRATEGIES:
                metrics, share = run_one(strategy_cls, scenario, requests_n, args.rate, redis_url)
                results[name][strategy_cls.name] = metrics
                shares[(name, strategy_cls.name)] = share
                print("  %-24s %-15s %s" % (name, strategy_cls.name, metrics), file=sys.stderr)
    finally:
        redis_proc.kill()
        redis_proc.wait()
    elapsed = time.monotonic() - began

    print("LLM retry/reroute benchmark: %d requests per cell at %.0f/s, real time (delays scaled down), %.0fs total"
          % (requests_n, args.rate, elapsed))
    header = "%-24s | %-15s | %12s | %13s | %12s | %16s" % ("scenario", "strategy", "success_rate",
                                                             "p95_latency_s", "wasted_calls", "served_by_primary")
    print(header)
    print("-" * len(header))
    for name in results:
        for strategy, row in results[name].items():
            print("%-24s | %-15s | %12.3f | %13.3f | %12d | %16.3f" % (
                name, strategy, row["success_rate"], row["p95_latency_s"], row["wasted_calls"],
                shares[(name, strategy)]))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=False)
        handle.write("\n")
    print("wrote %s" % os.path.relpath(args.out, ROOT))


if __name__ == "__main__":
    main()
