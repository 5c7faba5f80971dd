"""Benchmark: this pack's LLM retry/reroute policy against LiteLLM's Router and a
tenacity-wrapped client, on the same fault-injecting provider, in one run.

    <venv>/bin/python bench/retry.py --quick    # <venv>: Python 3.11 + bench/requirements-retry.txt

Every strategy serves the same open-loop workload (requests arrive at a fixed
rate, each on its own thread) against a fresh copy of the same fault script on
one loopback server (tests/synthralos_tests/llm_provider.py): a primary target
(OpenAI dialect) and a fallback (Anthropic dialect); the azure_* scenarios use
two Azure OpenAI regions instead (Azure's paths, api-key, its 429s), priced
like the others (the second region 5x, as a dearer reserved capacity). Per scenario and strategy
it reports the success rate, the p95 end-to-end latency of a request
(including every wait) and the wasted calls (provider calls that did not
produce the answer). Time is REAL wall-clock time with every delay scaled
down (backoff base 0.05 s, cap 1 s, breaker cooldown 1 s, Retry-After around
0.2-1 s) so that --quick takes about six minutes (8 scenarios). Every cell runs --repeat
times (3; the random-error scenarios with a new seed each run) and each figure
is the median over the runs: LiteLLM's wasted calls alone vary 6-13 between
single runs.

Besides the in-process figures it reports what a request costs inside st2,
where every python-script action execution is a new process:
`executions_per_request` (ours: 1 for the fast path, +1 per wait handed back
to the workflow's task delay, +1 per alert dispatched; LiteLLM and tenacity
counted as one python-script action wrapping them), `st2_p95_latency_s`
(p95 of in-process latency + executions x --per-execution-cost, 1.5 s by
default), `primary_share` (requests served by the primary / requests) and
`cost_per_1k_usd` (what the served answers cost per 1,000 requests, from the
token counts in the provider's usage, fallback priced 5x the primary).

Strategies:
* ours: `fastpath.serve`, exactly what the llm_request action runs (the
  attempt loop of llm_retry / reroute_request: record -> decide -> breaker
  check -> sleep a short wait -> call), with breakers shared through a real
  redis-server. A wait over --fast-path-max-wait (0.5 s, the pack's 10 s
  scaled like the backoff) is handed back: the bench sleeps it (the
  workflow's task delay) and resumes, counting one more execution. The
  workflow rounds a handed-back delay up to whole seconds (Orquesta task
  delays are integers); here it is used as computed, since everything is
  scaled down.
  retry_after_cap_s is 2 s, the pack's default ratio (120 s against a 60 s
  backoff cap): a Retry-After up to it is waited out on the same target.
  `--retry-after-cap 0.25` is a latency-first profile: a longer Retry-After
  sends the request to the next (dearer) target at once while the limited
  one cools down for everyone.
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
{"<scenario>": {"ours": {"success_rate", "p95_latency_s", "wasted_calls", "executions_per_request",
                         "st2_p95_latency_s", "primary_share", "cost_per_1k_usd", "runs"},
                "litellm_router": {...}, "tenacity": {...}}}
ours also has "previous_executions_per_request": what the same attempts cost in
the one-attempt-per-task workflow this pack had before llm_request
(start + decide/route/call per attempt + a final decide/route, + alerts).
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

from synthralos_lib.llm import fastpath  # noqa: E402
from synthralos_lib.llm import policy as llm_policy  # noqa: E402
from synthralos_lib.state.config import load_config  # noqa: E402
from synthralos_lib.llm.client import call_llm  # noqa: E402
from synthralos_lib.llm.routing import make_policy  # noqa: E402
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
# one: the pack's default ratio (120 s against a 60 s backoff cap; scaled, 2 s).
RETRY_AFTER_CAP_S = 2.0
COOLDOWN_S = 1
QUOTA_AFTER_S = 60.0  # the pack's 3600 s default against its 120 s cap, scaled (a wait of days is over either)
FAST_PATH_MAX_WAIT_S = 0.5  # the pack's 10 s default, scaled like the backoff (1 s -> 0.05 s)
PER_EXECUTION_COST_S = 1.5  # a python-script execution on a small st2 box (1.2-2.9 s measured)
# USD per 1M tokens (input, output): the primary at gpt-4o-mini's list price, the fallback 5x.
PRICES = {"p": (0.15, 0.60), "f": (0.75, 3.00)}

# LiteLLM reads its backoff constants from the environment when imported: scale them like ours.
os.environ.setdefault("INITIAL_RETRY_DELAY", str(BASE_DELAY_S))
os.environ.setdefault("MAX_RETRY_DELAY", str(MAX_DELAY_S))
os.environ.setdefault("JITTER", str(BASE_DELAY_S))


# -- scenarios ---------------------------------------------------------------
# Each sets up the primary endpoint "p" (the fallback "f" is healthy unless said).
# Times are seconds from the first request.

def transient_30pct(server, duration, run):
    # Each run draws its own error sequence (seed 7, 8, ...), so the medians are not one lucky draw.
    server.set_error_rate("p", 0.3, ["server_error", "bad_gateway", "unavailable"], seed=7 + run)


def primary_outage(server, duration, run):
    server.add_outage("p", duration * 0.2, duration * 0.7, "unavailable")


def rate_limited(server, duration, run):
    # Both targets enforce a real sliding-window limit; together they carry the load.
    server.set_rate_limit("p", 6, 1.0)
    server.set_rate_limit("f", 6, 1.0)


def quota_exhausted_primary(server, duration, run):
    server.set_default("p", "quota")


def spend_cap_429(server, duration, run):
    # A monthly spend cap answered as a rate limit with a wait of days (as Anthropic has done):
    # 429 rate_limit_exceeded, retry-after-ms of 3 days; only the wait says it is a quota.
    server.set_default("p", {"fault": "rate_limit", "retry_after": 3 * 86400, "retry_after_ms": 3 * 86400 * 1000})


def outage_says_do_not_retry(server, duration, run):
    # primary_outage, but the primary says so: its 500s carry `x-should-retry: false` (a retry of
    # the request will fail the same way; the official SDKs obey it).
    server.add_outage("p", duration * 0.2, duration * 0.7, {"fault": "server_error", "should_retry": False})


def azure_region_rate_limited(server, duration, run):
    # Two Azure regions, each with its own real per-deployment limit; 429s carry retry-after,
    # retry-after-ms and x-ms-retry-after-ms.
    server.set_rate_limit("p", 6, 1.0)
    server.set_rate_limit("f", 6, 1.0)


def azure_wait_in_message(server, duration, run):
    # azure_region_rate_limited, but the 429s give the wait only in their prose ("Please retry
    # after 0.123 seconds."), no header: what some gateways in front of Azure pass on.
    server.set_rate_limit("p", 6, 1.0, wait_in="message")
    server.set_rate_limit("f", 6, 1.0, wait_in="message")


# (name, setup, kind of "p", kind of "f")
SCENARIOS = [
    ("transient_30pct", transient_30pct, "openai", "anthropic"),
    ("primary_outage", primary_outage, "openai", "anthropic"),
    ("rate_limited", rate_limited, "openai", "anthropic"),
    ("quota_exhausted_primary", quota_exhausted_primary, "openai", "anthropic"),
    ("spend_cap_429", spend_cap_429, "openai", "anthropic"),
    ("outage_says_do_not_retry", outage_says_do_not_retry, "openai", "anthropic"),
    ("azure_region_rate_limited", azure_region_rate_limited, "azure_openai", "azure_openai"),
    ("azure_wait_in_message", azure_wait_in_message, "azure_openai", "azure_openai"),
]
AZURE_API_VERSION = "2024-10-21"


# -- strategies --------------------------------------------------------------

class Ours(object):
    name = "ours"

    retry_after_cap_s = RETRY_AFTER_CAP_S
    max_wait_s = FAST_PATH_MAX_WAIT_S

    def __init__(self, server, redis_url):
        self.settings = load_config({
            "llm_targets": [
                dict(server.target("p"), priority=1, timeout_s=TIMEOUT_S),
                dict(server.target("f"), priority=2, timeout_s=TIMEOUT_S),
            ],
            "retry": {"max_attempts": MAX_ATTEMPTS, "base_delay_s": BASE_DELAY_S, "max_delay_s": MAX_DELAY_S,
                      "jitter": "full", "retry_after_cap_s": self.retry_after_cap_s,
                      "quota_after_s": QUOTA_AFTER_S},
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
        """(ok, executions): one llm_request execution, one more per hand-back, one per alert."""

        def call(name):
            return call_llm(self.settings.llm_target(name), MESSAGES, max_tokens=64, session=self.session)

        result = fastpath.serve(self.settings, self.store, self.chain, self.policy, call,
                                max_wait_s=self.max_wait_s, budget_s=300)
        executions = 1 + len(result["alerts"])
        while result["handed_back"]:
            time.sleep(result["resume"]["pending"]["delay_s"])  # the workflow's task delay
            result = fastpath.serve(self.settings, self.store, self.chain, self.policy, call,
                                    resume=result["resume"], max_wait_s=self.max_wait_s, budget_s=300)
            executions += 1 + len(result["alerts"])
        previous = 1 + 3 * result["attempt_count"] + 2 + sum(1 for a in result["attempts"]
                                                             if a["error_class"] in llm_policy.ALERT_CLASSES)
        return result["action"] == llm_policy.DONE, executions, previous


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
                {"model_name": "primary", "litellm_params": self._params(server, "p", PRIMARY_KEY)},
                {"model_name": "fallback", "litellm_params": self._params(server, "f", FALLBACK_KEY)},
            ],
            fallbacks=[{"primary": ["fallback"]}],
            num_retries=MAX_ATTEMPTS - 1,
            timeout=TIMEOUT_S,
            allowed_fails=2,
            cooldown_time=COOLDOWN_S,
        )

    @staticmethod
    def _params(server, endpoint, key):
        target = server.target(endpoint)
        common = {"api_key": key, "max_retries": 0, "timeout": TIMEOUT_S}
        if target["kind"] == "azure_openai":
            return dict(common, model="azure/" + target["model"], api_base=target["base_url"],
                        api_version=AZURE_API_VERSION)
        if target["kind"] == "anthropic":  # LiteLLM appends /v1/messages to an Anthropic api_base
            return dict(common, model="anthropic/" + target["model"], api_base=server.url + "/" + endpoint)
        return dict(common, model="openai/" + target["model"], api_base=target["base_url"])

    def request(self):
        try:
            response = self.router.completion(model="primary", messages=MESSAGES, max_tokens=64)
        except Exception:
            return False, 1, None
        return bool(response.choices[0].message.content), 1, None


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
        elif target["kind"] == "azure_openai":
            url = "%s/openai/deployments/%s/chat/completions?api-version=%s" % (
                target["base_url"], target["model"], AZURE_API_VERSION)
            headers = {"api-key": target["api_key"]}
            body = {"messages": MESSAGES, "max_tokens": 64}
        else:
            url = target["base_url"] + "/messages"
            headers = {"x-api-key": target["api_key"], "anthropic-version": "2023-06-01"}
            body = {"model": target["model"], "messages": MESSAGES, "max_tokens": 64}
        response = self.session.post(url, json=body, headers=headers, timeout=TIMEOUT_S)
        response.raise_for_status()
        data = response.json()
        return data["content"][0]["text"] if target["kind"] == "anthropic" else data["choices"][0]["message"]["content"]

    def request(self):
        for target in self.targets:
            try:
                return bool(self.call(target)), 1, None
            except Exception:
                continue
        return False, 1, None


STRATEGIES = [Ours, LiteLLMRouter, Tenacity]


# -- running -----------------------------------------------------------------

def p95(values):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def run_one(strategy_cls, scenario, requests_n, rate, redis_url, per_execution_cost, run=0,
            kinds=("openai", "anthropic")):
    duration = requests_n / float(rate)
    server = LLMProviderServer()

    def endpoints():
        server.add_endpoint("p", kinds[0], PRIMARY_KEY, region="us-east")
        server.add_endpoint("f", kinds[1], FALLBACK_KEY, region="eu-west")

    try:
        endpoints()
        strategy = strategy_cls(server, redis_url)
        strategy.request()  # warm-up (imports, connection pools) before the clock starts
        server.reset()
        endpoints()
        scenario(server, duration, run)

        results = [None] * requests_n
        threads = []

        def one(i):
            started = time.monotonic()
            ok, executions, previous = strategy.request()
            results[i] = (ok, time.monotonic() - started, executions, previous)

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
        successes = sum(1 for r in done if r[0])
        calls = server.calls()
        served_by_primary = sum(1 for c in calls if c["endpoint"] == "p" and c["status"] == 200)
        usd = sum(c["usage"][0] * PRICES[c["endpoint"]][0] + c["usage"][1] * PRICES[c["endpoint"]][1]
                  for c in calls if c["endpoint"] in PRICES) / 1e6
        executions = [r[2] for r in done]
        metrics = {
            "success_rate": round(successes / float(requests_n), 4),
            "p95_latency_s": round(p95([r[1] for r in done]), 3),
            "wasted_calls": len(calls) - successes,
            "executions_per_request": round(sum(executions) / float(max(len(done), 1)), 3),
            "st2_p95_latency_s": round(p95([r[1] + r[2] * per_execution_cost for r in done]), 3),
            "primary_share": round(served_by_primary / float(requests_n), 4),
            "cost_per_1k_usd": round(usd / requests_n * 1000, 6),
        }
        if all(r[3] is not None for r in done):
            metrics["previous_executions_per_request"] = round(sum(r[3] for r in done) / float(max(len(done), 1)), 3)
        return metrics
    finally:
        server.close()


def medians(runs):
    """Per metric, the median over the runs of one cell (the lower middle for an even count), plus `runs`."""
    merged = {}
    for key in runs[0]:
        ordered = sorted(r[key] for r in runs)
        merged[key] = ordered[(len(ordered) - 1) // 2]
    merged["runs"] = len(runs)
    return merged


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
    parser.add_argument("--quick", action="store_true", help="smaller workload (40 requests per cell; about six minutes)")
    parser.add_argument("--requests", type=int, help="requests per scenario and strategy")
    parser.add_argument("--rate", type=float, default=10.0, help="request arrivals per second")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per cell; each figure reported is the median over the runs")
    parser.add_argument("--retry-after-cap", type=float, default=RETRY_AFTER_CAP_S,
                        help="ours: longest Retry-After honoured before moving to the next target (s)")
    parser.add_argument("--fast-path-max-wait", type=float, default=FAST_PATH_MAX_WAIT_S,
                        help="ours: longest wait slept inside the one execution (s); longer ones go to the workflow")
    parser.add_argument("--per-execution-cost", type=float, default=PER_EXECUTION_COST_S,
                        help="seconds one st2 action execution adds (process start, imports, engine round trip)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "retry.json"))
    args = parser.parse_args(argv)
    Ours.retry_after_cap_s = args.retry_after_cap
    Ours.max_wait_s = args.fast_path_max_wait
    requests_n = args.requests or (40 if args.quick else 150)
    chosen = [s for s in SCENARIOS if not args.only or s[0] in args.only.split(",")]

    redis_proc, redis_url = start_redis()
    results = {}
    began = time.monotonic()
    try:
        for name, scenario, primary_kind, fallback_kind in chosen:
            results[name] = {}
            for strategy_cls in STRATEGIES:
                runs = []
                for run in range(args.repeat):
                    runs.append(run_one(strategy_cls, scenario, requests_n, args.rate, redis_url,
                                        args.per_execution_cost, run, (primary_kind, fallback_kind)))
                    print("  %-24s %-15s run %d: %s" % (name, strategy_cls.name, run + 1, runs[-1]), file=sys.stderr)
                results[name][strategy_cls.name] = medians(runs)
    finally:
        redis_proc.kill()
        redis_proc.wait()
    elapsed = time.monotonic() - began

    print("LLM retry/reroute benchmark: %d requests per cell at %.0f/s, median of %d runs, real time (delays scaled"
          " down), %.0fs total; st2 latency = in-process + executions x %.1fs"
          % (requests_n, args.rate, args.repeat, elapsed, args.per_execution_cost))
    columns = [("success_rate", "%12.3f"), ("p95_latency_s", "%13.3f"), ("wasted_calls", "%12d"),
               ("executions_per_request", "%22.2f"), ("st2_p95_latency_s", "%17.3f"), ("primary_share", "%13.3f"),
               ("cost_per_1k_usd", "%15.4f")]
    header = "%-24s | %-15s | " % ("scenario", "strategy") + " | ".join(
        ("%" + fmt[1:].split(".")[0].rstrip("df") + "s") % key for key, fmt in columns)
    print(header)
    print("-" * len(header))
    for name in results:
        for strategy, row in results[name].items():
            print("%-24s | %-15s | " % (name, strategy) + " | ".join(fmt % row[key] for key, fmt in columns))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=False)
        handle.write("\n")
    print("wrote %s" % os.path.relpath(args.out, ROOT))


if __name__ == "__main__":
    main()
