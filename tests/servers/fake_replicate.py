"""A Replicate-protocol server for Kiln's tests, as strict and as quirky as the real one (see
../shared/reference/replicate.md and Replicate's OpenAPI description).

    fake_replicate.py --token TOKEN --image-tool PATH/kiln-test-image

Listens on 127.0.0.1 on a free port, prints the port as its first line, runs until killed.

The API, under /v1: POST /v1/models/{owner}/{name}/predictions (official models, no `version`),
POST /v1/predictions (`version` required), GET /v1/predictions/{id},
POST /v1/predictions/{id}/cancel, GET /v1/predictions (list), GET /v1/account. Output files are served from /delivery/ (no auth, like
replicate.delivery). Behaviour of the real service kept on purpose:
- `Authorization: Bearer <token>` or `Token <token>`, else 401 problem+json;
- unknown top-level or input fields, wrong types, out-of-range numbers, bad enums: 422 with
  `detail` and `invalid_fields`; `version` on the models endpoint: 422;
- `Prefer: wait=N` holds the create until the prediction ends or N s pass; in the
  "processing_with_output" sync mode (default, as seen in recordings of image models) a finished
  prediction is reported `processing` with its output, no `completed_at` and no `metrics`;
- `Cancel-After` cancels runaway predictions; outputs expire (`data_removed`) after
  `expire_after_s`; `ratelimit-*` headers on every answer; 429 carries `retry_after` in the body
  only;
- flux-schnell's aspect_ratio/megapixels sizes and WebP default; SDXL's PNGs and its failure on
  sizes that are not multiples of 8; NSFW failures with each model's own message;
- images painted as the models paint them (kiln-test-image, given the prediction's prompt and
  seed): opaque RGB, never alpha, whatever the prompt says; one subject on a near-uniform, slightly
  noisy backdrop (sometimes with a soft shadow) only when the prompt asks for a plain background;
  a busy scene otherwise; "seamless tileable" textures that do not tile (their edges differ and
  light falls from one side). Transparency, tiling and trimming must be made after generation.
  A request without a seed gets one as the real API gives it (unpredictable to the client), but
  drawn from a hash of the server's --seed (default 1), the model, the input and how often that
  input was seen: each run of a test paints the same images, in whatever order the creates
  arrive, so a result that holds only for some seeds shows as a wrong result, not a flaky test.

Test controls (no auth): POST /_control merges JSON into the configuration:
  latency_s        seconds from create to the end of a prediction (0.2)
  sync_mode        "processing_with_output" | "honest"
  output_mode      "url" | "data" (data: URIs instead of URLs)
  expire_after_s   seconds after completion before outputs are removed (3600)
  predict_time_s   metrics.predict_time reported (default: latency_s)
  faults           {"create": [...], "get": [...], "download": [...], "cancel": [...]}: queues
                   consumed one entry per request of that kind; entries: {"status": 429,
                   "retry_after": 2}, {"status": 402}, {"status": 500}, {"status": 502} or
                   {"status": 504} (an HTML body, as from a gateway; nothing created),
                   {"drop": true}, {"truncate": true} (downloads),
                   {"lose_answer": true} (create the prediction, then drop the connection),
                   {"status": 504, "after_create": true} (create the prediction, billed, then
                   answer as a failing nginx proxy does: "504 Gateway Time-out" with an HTML
                   body; also 500, 502 and 503), {"garbage_after_create": true} (create it,
                   then answer 201 with a body cut short, not JSON), {"ok": true} (answer
                   normally). Faults not about creating leave nothing created.
  list_delay_s     seconds after its creation before a prediction shows in GET /v1/predictions
                   (0): models whose predictions are registered late
  create_limit     {"rate": 8, "burst": 4}: a token bucket on create requests, as Replicate
                   limits creates per account; over it, 429 with a whole-second `retry_after`
  image_faults     {"blank_rate": 0.3, "truncate_rate": 0.1, "seed": 1}: that share of
                   succeeded predictions deliver an all-black image (as safety filters do) or a
                   file cut in half (served whole, with a matching Content-Length). Decided by
                   a hash of the seed, the model, the input and how often that input was seen,
                   so a run's faults do not depend on thread timing.
  prompt_rules     [{"contains": "...", "fate": "nsfw" | "fail" | "abort" | "slow" | "expire",
                     "times": n, "error": "..."}]: the next n predictions whose prompt contains
                   the text end that way ("slow" never finishes by itself, "expire" succeeds
                   with its outputs already removed); "gif" and "html" succeed with an output
                   that is a GIF or an HTML page (some models answer GIFs; a CDN error page);
                   "bomb" with a 23000x23000 PNG of about 50 KB (bomb_side: another
                   side; up to 8192 a whole image that decodes)
GET /_stats returns what happened: every create request (time, status, prompt), created
predictions, polls, cancels, downloads and downloads that carried an Authorization header.
"""

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
OFFICIAL = {FLUX}
VERSIONS = {SDXL_VERSION: SDXL}

FLUX_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640), "3:2": (1216, 832),
              "2:3": (832, 1216), "4:5": (896, 1088), "5:4": (1088, 896), "3:4": (896, 1152),
              "4:3": (1152, 896), "9:16": (768, 1344), "9:21": (640, 1536)}
SDXL_SCHEDULERS = ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM",
                   "K_EULER_ANCESTRAL", "K_EULER", "PNDM"]
SDXL_REFINE = ["no_refiner", "expert_ensemble_refiner", "base_image_refiner"]

# Input schemas: field -> (type, constraints). Types as in the models' OpenAPI schemas.
SCHEMAS = {
    FLUX: {
        "prompt": ("string", {"required": True}),
        "aspect_ratio": ("string", {"enum": list(FLUX_SIZES)}),
        "num_outputs": ("integer", {"min": 1, "max": 4}),
        "num_inference_steps": ("integer", {"min": 1, "max": 4}),
        "seed": ("integer", {}),
        "output_format": ("string", {"enum": ["webp", "jpg", "png"]}),
        "output_quality": ("integer", {"min": 0, "max": 100}),
        "disable_safety_checker": ("boolean", {}),
        "go_fast": ("boolean", {}),
        "megapixels": ("string", {"enum": ["1", "0.25"]}),
    },
    SDXL: {
        "prompt": ("string", {}),
        "negative_prompt": ("string", {}),
        "image": ("string", {}),
        "mask": ("string", {}),
        "width": ("integer", {}),
        "height": ("integer", {}),
        "num_outputs": ("integer", {"min": 1, "max": 4}),
        "scheduler": ("string", {"enum": SDXL_SCHEDULERS}),
        "num_inference_steps": ("integer", {"min": 1, "max": 500}),
        "guidance_scale": ("number", {"min": 1, "max": 50}),
        "prompt_strength": ("number", {"min": 0, "max": 1}),
        "seed": ("integer", {}),
        "refine": ("string", {"enum": SDXL_REFINE}),
        "high_noise_frac": ("number", {"min": 0, "max": 1}),
        "refine_steps": ("integer", {}),
        "apply_watermark": ("boolean", {}),
        "lora_scale": ("number", {"min": 0, "max": 1}),
        "replicate_weights": ("string", {}),
        "disable_safety_checker": ("boolean", {}),
    },
}

NSFW_ERRORS = {
    FLUX: "All generated images contained NSFW content. Try running it again with a different "
          "prompt.",
    SDXL: "NSFW content detected. Try running it again, or try a different prompt.",
}


def now_iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id():
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(26))


def parse_duration(text):
    """Cancel-After values: 30s, 5m, 1h30m, 500ms... Returns seconds or None."""
    if not re.fullmatch(r"(\d+(\.\d+)?(h|m|s|ms))+", text or ""):
        return None
    total = 0.0
    for number, _, unit in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)", text):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def type_ok(kind, value):
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_input(model, inputs):
    """invalid_fields for an input object, as Replicate reports them."""
    problems = []
    schema = SCHEMAS[model]
    for name in inputs:
        if name not in schema:
            problems.append(("additional_property_not_allowed", "input",
                             f"Additional property {name} is not allowed"))
    for name, (kind, rules) in schema.items():
        if name not in inputs:
            if rules.get("required"):
                problems.append(("required", "input", f"{name} is required"))
            continue
        value = inputs[name]
        field = f"input.{name}"
        if not type_ok(kind, value):
            given = type(value).__name__.replace("str", "string").replace("int", "integer")
            problems.append(("invalid_type", field,
                             f"Invalid type. Expected: {kind}, given: {given}"))
            continue
        if "enum" in rules and value not in rules["enum"]:
            options = ", ".join(f'"{v}"' for v in rules["enum"])
            problems.append(("enum", field, f"{field} must be one of the following: {options}"))
        if "min" in rules and value < rules["min"]:
            problems.append(("number_gte", field,
                             f"Must be greater than or equal to {rules['min']}"))
        if "max" in rules and value > rules["max"]:
            problems.append(("number_lte", field, f"Must be less than or equal to {rules['max']}"))
    return problems


class Fake:
    def __init__(self, token, image_tool, seed=1):
        self.token = token
        self.image_tool = image_tool
        self.seed = seed  # of the seeds of requests that give none
        self.seeds_seen = {}
        self.lock = threading.Lock()
        self.files = tempfile.mkdtemp(prefix="fake-replicate-")
        self.config = {"latency_s": 0.2, "sync_mode": "processing_with_output",
                       "output_mode": "url", "expire_after_s": 3600, "predict_time_s": None,
                       "faults": {}, "prompt_rules": [], "image_faults": {},
                       "list_delay_s": 0}
        self.inputs_seen = {}
        self.bucket = None  # create_limit's (tokens, time), from the first create
        self.predictions = {}
        self.stats = {"create_requests": [], "creates": [], "gets": 0, "cancels": [],
                      "downloads": 0, "auth_on_delivery": 0, "account_checks": 0,
                      "lists": 0}

    def next_fault(self, kind):
        with self.lock:
            queue = self.config["faults"].get(kind) or []
            return queue.pop(0) if queue else None

    def take_create_token(self):
        """None when a create may go ahead, else the whole seconds to wait (config create_limit)."""
        limit = self.config.get("create_limit")
        if not limit:
            return None
        now = time.time()
        with self.lock:
            rate, burst = limit["rate"], limit.get("burst", 1)
            tokens, last = self.bucket or (burst, now)
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1:
                self.bucket = (tokens - 1, now)
                return None
            self.bucket = (tokens, now)
            return max(1, math.ceil((1 - tokens) / rate))

    def fate_for(self, prompt):
        with self.lock:
            for rule in self.config["prompt_rules"]:
                if rule.get("times", 1) > 0 and rule["contains"] in (prompt or ""):
                    rule["times"] = rule.get("times", 1) - 1
                    return rule["fate"], rule.get("error")
        return "succeed", None

    def image_fault(self, model, inputs):
        """None, "blank" or "truncate" for a new prediction, per config["image_faults"]."""
        faults = self.config["image_faults"]
        if not faults:
            return None
        key = model + json.dumps(inputs, sort_keys=True)
        with self.lock:
            seen = self.inputs_seen[key] = self.inputs_seen.get(key, 0) + 1
        digest = hashlib.sha256(f"{faults.get('seed', 0)}|{key}|{seen}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        blank = faults.get("blank_rate", 0)
        if draw < blank:
            return "blank"
        if draw < blank + faults.get("truncate_rate", 0):
            return "truncate"
        return None

    # A 1x1 GIF, and what a CDN serves when it has lost the file.
    GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
           b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
    HTML = b"<html><head><title>Error</title></head><body><h1>Not an image</h1></body></html>"

    @staticmethod
    def bomb(side=23000):
        """A PNG of side x side pixels in a few hundred KB of all-zero pixel data (a
        decompression bomb, as a hostile or broken server may send): 23000 (the default) is a
        valid header and the start of its data; up to 8192 the whole image, so that it decodes."""
        import struct
        import zlib

        def chunk(kind, body):
            return (struct.pack(">I", len(body)) + kind + body +
                    struct.pack(">I", zlib.crc32(kind + body)))
        z = zlib.compressobj(9)
        row = bytes(1 + side * 3)
        rows = side if side <= 8192 else 700
        data = b"".join(z.compress(row) for _ in range(rows))
        data += z.flush() if rows == side else z.flush(zlib.Z_SYNC_FLUSH)
        return (b"\x89PNG\r\n\x1a\n" +
                chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", data) + chunk(b"IEND", b""))

    def odd_file(self, fate):
        path = os.path.join(self.files, f"{new_id()}.{'png' if fate == 'bomb' else fate}")
        with open(path, "wb") as f:
            f.write(self.bomb(self.config.get("bomb_side", 23000)) if fate == "bomb"
                    else self.GIF if fate == "gif" else self.HTML)
        return path

    def render(self, fmt, width, height, seed, fault=None, prompt=""):
        """Paints one output as the models do (see kiln-test-image): opaque, the plain backdrop
        only if the prompt asks for it, textures that do not tile."""
        path = os.path.join(self.files, f"{new_id()}.{fmt}")
        subprocess.run([self.image_tool, fmt, str(width), str(height),
                        "black" if fault == "blank" else str(seed), path,
                        "--prompt", prompt or ""], check=True)
        if fault == "truncate":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        return path

    def create(self, model, version, inputs, cancel_after_s):
        fate, error = self.fate_for(inputs.get("prompt", ""))
        latency = self.config["latency_s"]
        p = {"id": new_id(), "model": model, "version": version, "input": inputs,
             "created": time.time(), "latency": latency, "fate": fate, "error": error,
             "canceled_at": None, "cancel_after": cancel_after_s, "files": [],
             "predict_time": self.config["predict_time_s"]}
        if fate in ("gif", "html", "bomb"):
            p["files"].append(self.odd_file(fate))
            p["fate"] = "succeed"
        if fate in ("succeed", "expire"):
            if model == FLUX:
                w, h = FLUX_SIZES[inputs.get("aspect_ratio", "1:1")]
                if inputs.get("megapixels", "1") == "0.25":
                    w, h = w // 2, h // 2
                fmt = inputs.get("output_format", "webp")
            else:
                w, h = inputs.get("width", 1024), inputs.get("height", 1024)
                fmt = "png"
                if w % 8 or h % 8:
                    p["fate"] = "fail"
                    p["error"] = (f"`height` and `width` have to be divisible by 8 but are {h} "
                                  f"and {w}.")
            if p["fate"] in ("succeed", "expire"):
                seed = inputs.get("seed")
                if seed is None:
                    key = model + json.dumps(inputs, sort_keys=True)
                    with self.lock:
                        seen = self.seeds_seen[key] = self.seeds_seen.get(key, 0) + 1
                    digest = hashlib.sha256(f"{self.seed}|{key}|{seen}".encode()).digest()
                    seed = int.from_bytes(digest[:2], "big")
                p["image_fault"] = self.image_fault(model, inputs)
                for _ in range(inputs.get("num_outputs", 1)):
                    p["files"].append(self.render(fmt, w, h, seed, p["image_fault"],
                                                  inputs.get("prompt", "")))
                    seed += 1
        with self.lock:
            self.predictions[p["id"]] = p
            self.stats["creates"].append({"id": p["id"], "model": model, "input": inputs,
                                          "time": p["created"],
                                          "image_fault": p.get("image_fault"),
                                          "cancel_after_s": cancel_after_s})
        return p

    def status_of(self, p, t):
        """(status, completed time or None) of a prediction at time t."""
        end = p["created"] + (p["latency"] if p["fate"] != "slow" else 1e12)
        if p["canceled_at"] is not None and p["canceled_at"] < end:
            return "canceled", p["canceled_at"]
        if p["cancel_after"] is not None and p["created"] + p["cancel_after"] < end:
            if t >= p["created"] + p["cancel_after"]:
                return "canceled", p["created"] + p["cancel_after"]
        if p["fate"] == "slow":
            return ("starting" if t < p["created"] + 0.05 else "processing"), None
        if t < p["created"] + p["latency"] * 0.25:
            return "starting", None
        if t < end:
            return "processing", None
        if p["fate"] == "abort":
            return "aborted", end
        return ("failed" if p["fate"] in ("nsfw", "fail") else "succeeded"), end

    def view(self, p, base, sync=False):
        t = time.time()
        status, completed = self.status_of(p, t)
        removed = completed is not None and (t > completed + self.config["expire_after_s"]
                                             or p["fate"] == "expire")
        output = None
        if status == "succeeded" and not removed:
            output = []
            for path in p["files"]:
                if self.config["output_mode"] == "data":
                    with open(path, "rb") as f:
                        output.append("data:application/octet-stream;base64,"
                                      + base64.b64encode(f.read()).decode())
                else:
                    output.append(f"{base}/delivery/{p['id']}/{os.path.basename(path)}")
        error = None
        if status == "failed":
            error = p["error"] or (NSFW_ERRORS[p["model"]] if p["fate"] == "nsfw"
                                   else "Prediction failed for an unknown reason")
        started = p["created"] + min(p["latency"] * 0.25, 0.05)
        body = {
            "id": p["id"], "model": p["model"], "version": p["version"], "input": p["input"],
            "logs": "", "output": output, "data_removed": removed, "error": error,
            "status": status, "created_at": now_iso(p["created"]),
            "started_at": now_iso(started) if t >= started else None,
            "completed_at": now_iso(completed) if completed else None,
            "urls": {"cancel": f"{base}/v1/predictions/{p['id']}/cancel",
                     "get": f"{base}/v1/predictions/{p['id']}",
                     "stream": f"{base}/v1/stream/{p['id']}",
                     "web": f"https://replicate.com/p/{p['id']}"},
        }
        if completed:
            predict = p["predict_time"] if p["predict_time"] is not None else p["latency"]
            body["metrics"] = {"predict_time": predict, "total_time": completed - p["created"]}
        if sync and status == "succeeded" and self.config["sync_mode"] == "processing_with_output":
            body["status"] = "processing"
            body["completed_at"] = None
            body.pop("metrics", None)
        return body


FAKE = None

GATEWAY_REASONS = {500: "Internal Server Error", 502: "Bad Gateway",
                   503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def gateway_page(status):
    """The HTML error page nginx answers with when its upstream fails."""
    title = f"{status} {GATEWAY_REASONS.get(status, 'Error')}"
    return (f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
            f"<hr><center>nginx</center></body></html>").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def base(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, status, body, headers=(), content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.path.startswith("/v1/"):
            self.send_header("ratelimit-remaining", "599")
            self.send_header("ratelimit-reset", "1")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def problem(self, status, title, detail, **extra):
        self.reply(status, dict(title=title, detail=detail, status=status, **extra),
                   content_type="application/problem+json")

    def drop(self):
        self.close_connection = True
        self.connection.shutdown(2)

    def apply_fault(self, fault):
        """Answers with the queued fault; False when the request should proceed."""
        if not fault or fault.get("ok"):
            return False
        if fault.get("drop"):
            self.drop()
            return True
        status = fault["status"]
        if status == 429:
            wait = fault.get("retry_after", 1)
            self.problem(429, "Request was throttled.",
                         f"Request was throttled. Your rate limit resets in ~{wait}s.",
                         retry_after=wait)
        elif status == 402:
            self.problem(402, "Insufficient credit",
                         "You have insufficient credit to run this model. Go to "
                         "https://replicate.com/account/billing#billing to purchase credit. "
                         "Once you purchase credit, please wait a few minutes before trying "
                         "again.")
        elif status == 502:
            self.reply(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                       content_type="text/html")
        elif status == 504:
            self.reply(504, gateway_page(504), content_type="text/html")
        else:
            self.problem(status, "Internal Server Error", "Something went wrong.")
        return True

    def authorised(self):
        header = self.headers.get("Authorization", "")
        if header in (f"Bearer {FAKE.token}", f"Token {FAKE.token}"):
            return True
        self.problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return False

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/_stats":
            with FAKE.lock:
                return self.reply(200, FAKE.stats)
        if path.startswith("/delivery/"):
            return self.deliver(path)
        if path == "/v1/account":
            with FAKE.lock:
                FAKE.stats["account_checks"] += 1
            if self.authorised():
                self.reply(200, {"type": "user", "username": "kiln-tests", "name": "Kiln Tests",
                                 "github_url": "https://github.com/kiln-tests"})
            return
        if path == "/v1/predictions":
            return self.list_predictions()
        m = re.fullmatch(r"/v1/predictions/([a-z0-9]+)", path)
        if not m:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        if not self.authorised():
            return
        with FAKE.lock:
            FAKE.stats["gets"] += 1
        if self.apply_fault(FAKE.next_fault("get")):
            return
        p = FAKE.predictions.get(m.group(1))
        if not p:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        self.reply(200, FAKE.view(p, self.base()))

    def list_predictions(self):
        """GET /v1/predictions: the newest first, 100 a page (one page here)."""
        if not self.authorised():
            return
        now = time.time()
        with FAKE.lock:
            FAKE.stats["lists"] += 1
            delay = FAKE.config.get("list_delay_s") or 0
            listed = [p for p in FAKE.predictions.values() if p["created"] + delay <= now]
            newest = sorted(listed, key=lambda p: -p["created"])[:100]
        results = [FAKE.view(p, self.base()) for p in newest]
        self.reply(200, {"next": None, "previous": None, "results": results})

    def deliver(self, path):
        with FAKE.lock:
            FAKE.stats["downloads"] += 1
            if self.headers.get("Authorization"):
                FAKE.stats["auth_on_delivery"] += 1
        parts = path.split("/")
        p = FAKE.predictions.get(parts[2]) if len(parts) == 4 else None
        files = {os.path.basename(f): f for f in (p["files"] if p else [])}
        if not p or parts[3] not in files or FAKE.view(p, self.base())["data_removed"]:
            return self.reply(404, b"Not Found", content_type="text/plain")
        fault = FAKE.next_fault("download")
        with open(files[parts[3]], "rb") as f:
            data = f.read()
        kind = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
                "html": "text/html"}[parts[3].rsplit(".", 1)[1]]
        if fault and fault.get("truncate"):
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            return self.drop()
        if self.apply_fault(fault):
            return
        self.reply(200, data, content_type=kind)

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/_control":
            update = self.read_json() or {}
            with FAKE.lock:
                FAKE.config.update(update)
            return self.reply(200, FAKE.config)
        m = re.fullmatch(r"/v1/predictions/([a-z0-9]+)/cancel", path)
        if m:
            return self.cancel(m.group(1))
        m = re.fullmatch(r"/v1/models/([^/]+)/([^/]+)/predictions", path)
        if m or path == "/v1/predictions":
            return self.create(f"{m.group(1)}/{m.group(2)}" if m else None)
        self.problem(404, "Not found", "The requested resource could not be found.")

    def cancel(self, pid):
        self.read_json()
        if not self.authorised():
            return
        if self.apply_fault(FAKE.next_fault("cancel")):
            return
        p = FAKE.predictions.get(pid)
        if not p:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        with FAKE.lock:
            FAKE.stats["cancels"].append(pid)
            status, _ = FAKE.status_of(p, time.time())
            if status in ("starting", "processing"):
                p["canceled_at"] = time.time()
        self.reply(200, FAKE.view(p, self.base()))

    def create(self, model):
        body = self.read_json()
        inputs = (body or {}).get("input") if isinstance(body, dict) else None
        inputs = inputs if isinstance(inputs, dict) else {}
        record = {"time": time.time(), "status": None, "model": model,
                  "prompt": inputs.get("prompt"), "input": inputs}
        with FAKE.lock:
            FAKE.stats["create_requests"].append(record)

        def answer(status):
            record["status"] = status

        if not self.authorised():
            return answer(401)
        wait = FAKE.take_create_token()
        if wait is not None:
            record["retry_after"] = wait
            answer(429)
            return self.problem(429, "Request was throttled.",
                                f"Request was throttled. Your rate limit resets in ~{wait}s.",
                                retry_after=wait)
        fault = FAKE.next_fault("create")
        after_create = fault and (fault.get("lose_answer") or fault.get("after_create")
                                  or fault.get("garbage_after_create"))
        if fault and not fault.get("ok") and not after_create:
            answer(fault.get("status", 0))
            if fault.get("status") == 429:
                record["retry_after"] = fault.get("retry_after", 1)
            return self.apply_fault(fault)
        if body is None:
            answer(400)
            return self.problem(400, "Bad request", "The request body is not a JSON object.")
        allowed = {"input", "webhook", "webhook_events_filter", "stream"}
        if model is None:
            allowed.add("version")
        invalid = [("additional_property_not_allowed", "(root)",
                    f"Additional property {key} is not allowed") for key in body
                   if key not in allowed]
        version = "hidden"
        if model is None:
            ref = body.get("version")
            if not isinstance(ref, str):
                invalid.append(("required", "(root)", "version is required"))
            else:
                owner_name, _, digest = ref.rpartition(":")
                if digest not in VERSIONS or (owner_name and owner_name != VERSIONS[digest]):
                    answer(422)
                    return self.problem(422, "Invalid version or not permitted",
                                        "The specified version does not exist (or perhaps you "
                                        "don't have permission to use it?)")
                model, version = VERSIONS[digest], digest
        elif model not in OFFICIAL:
            answer(404)
            return self.problem(404, "Not found", "The requested resource could not be found.")
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            invalid.append(("required", "(root)", "input is required"))
        else:
            invalid += check_input(model, inputs)
        if invalid:
            answer(422)
            fields = [{"type": t, "field": f, "description": d} for t, f, d in invalid]
            detail = "".join(f"- {f}: {d}\n" for t, f, d in invalid)
            return self.problem(422, "Input validation failed", detail, invalid_fields=fields)
        cancel_after = None
        if "Cancel-After" in self.headers:
            cancel_after = parse_duration(self.headers["Cancel-After"])
            if cancel_after is None or cancel_after < 5:
                answer(422)
                return self.problem(422, "Invalid Cancel-After header",
                                    "Cancel-After must be a duration of at least 5s")
        wait = None
        prefer = self.headers.get("Prefer", "")
        if prefer:
            m = re.fullmatch(r"wait(=(\d+))?", prefer.strip())
            if not m or not 1 <= int(m.group(2) or 60) <= 60:
                answer(400)
                return self.problem(400, "Invalid Prefer header",
                                    "Prefer must be `wait` or `wait=n` with 1 <= n <= 60")
            wait = int(m.group(2) or 60)
        p = FAKE.create(model, version, inputs, cancel_after)
        answer(201)
        if fault and fault.get("lose_answer"):
            return self.drop()  # created, but the client never hears of it
        if fault and fault.get("after_create"):
            # Created and billed, but a proxy in between gave up: the client hears an error.
            record["after_create"] = True
            answer(fault["status"])
            return self.reply(fault["status"], gateway_page(fault["status"]),
                              content_type="text/html")
        if fault and fault.get("garbage_after_create"):
            record["garbage_after_create"] = True
            whole = json.dumps(FAKE.view(p, self.base())).encode()
            return self.reply(201, whole[:len(whole) // 3])
        headers = []
        if wait is not None:
            deadline = time.time() + wait
            while time.time() < deadline and FAKE.status_of(p, time.time())[1] is None:
                time.sleep(0.02)
            headers.append(("Preference-Applied", f"wait={wait}"))
        self.reply(201, FAKE.view(p, self.base(), sync=wait is not None), headers)


def main():
    global FAKE
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--image-tool", required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    FAKE = Fake(args.token, args.image_tool, args.seed)
    # A real service accepts many connections at once; the standard library's backlog of 5
    # drops the rest of a burst of connects, and the client's TCP resends them a second later.
    ThreadingHTTPServer.request_queue_size = 128

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # A client killed mid-request (the journal tests kill kiln on purpose) is not the
            # server's error; anything else is still printed.
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        subprocess.run(["rm", "-rf", FAKE.files])


if __name__ == "__main__":
    sys.exit(main())
