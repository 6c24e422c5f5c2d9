"""A gate in front of an S3-compatible test server (s3rver) that checks every request's AWS
Signature Version 4, as S3 does, and passes on only those that verify.

s3rver answers S3's protocol (objects, 404 NoSuchKey, XML errors) but does not verify V4
signatures; this gate does, from AWS's documented algorithm ("Signature Version 4 signing
process", "Authenticating Requests: Using the Authorization Header" for S3): the canonical
request (method, URI, sorted query, the signed headers, the payload hash), the string to sign
with the credential scope, the signing key derived from the secret, date, region and service.
It also checks x-amz-content-sha256 against the body, the scope's region and service, and that
x-amz-date is within 15 minutes. A request that fails any check gets S3's 403 answer
(SignatureDoesNotMatch, AccessDenied...). Each request is logged as "METHOD PATH verified" or
"METHOD PATH refused". Prints its port on stdout once listening. Standard library only.
"""

import argparse
import datetime
import hashlib
import hmac
import http.client
import http.server
import sys
import threading
import urllib.parse


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def uri_encode(text, slash=True):
    safe = "-_.~" + ("/" if slash else "")
    return urllib.parse.quote(text, safe=safe)


def canonical_query(query):
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{uri_encode(k, False)}={uri_encode(v, False)}" for k, v in sorted(pairs))


class Gate(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def refuse(self, code, why):
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{why}</Message></Error>").encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.record("refused")

    def record(self, verdict):
        with self.server.log_lock, open(self.server.log_path, "a") as f:
            f.write(f"{self.command} {urllib.parse.urlsplit(self.path).path} {verdict}\n")

    def check(self, body):
        """None when the signature verifies, else (S3 error code, message)."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "AccessDenied", "no AWS Signature Version 4"
        fields = {}
        for part in auth[len("AWS4-HMAC-SHA256 "):].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v
        try:
            key_id, date, region, service, terminal = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            given = fields["Signature"]
        except (KeyError, ValueError):
            return "AuthorizationHeaderMalformed", "malformed Authorization header"
        cfg = self.server.cfg
        if key_id != cfg.key:
            return "InvalidAccessKeyId", "unknown access key"
        if region != cfg.region or service != "s3" or terminal != "aws4_request":
            return "AuthorizationHeaderMalformed", f"wrong scope {region}/{service}/{terminal}"
        amz_date = self.headers.get("x-amz-date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            return "AccessDenied", "no valid x-amz-date"
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 900:
            return "RequestTimeTooSkewed", "x-amz-date too far from now"
        if amz_date[:8] != date:
            return "SignatureDoesNotMatch", "scope date is not x-amz-date's"
        payload = self.headers.get("x-amz-content-sha256")
        if payload is None:
            return "InvalidRequest", "missing x-amz-content-sha256"
        if payload != "UNSIGNED-PAYLOAD" and payload != sha256_hex(body):
            return "XAmzContentSHA256Mismatch", "the body does not hash to x-amz-content-sha256"
        if "host" not in signed or "x-amz-date" not in signed:
            return "AccessDenied", "host and x-amz-date must be signed"
        split = urllib.parse.urlsplit(self.path)
        lines = []
        for name in signed:
            values = self.headers.get_all(name)
            if values is None:
                return "SignatureDoesNotMatch", f"signed header {name} is missing"
            lines.append(name + ":" + ",".join(" ".join(v.split()) for v in values))
        canonical = "\n".join([
            self.command,
            uri_encode(urllib.parse.unquote(split.path)),
            canonical_query(split.query),
            "\n".join(lines) + "\n",
            ";".join(signed),
            payload,
        ])
        scope = f"{date}/{region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             sha256_hex(canonical.encode())])
        k = sign(("AWS4" + cfg.secret).encode(), date)
        k = sign(k, region)
        k = sign(k, "s3")
        k = sign(k, "aws4_request")
        expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            return "SignatureDoesNotMatch", "the signature does not verify"
        return None

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        problem = self.check(body)
        if problem:
            return self.refuse(*problem)
        up = http.client.HTTPConnection(self.server.upstream.hostname,
                                        self.server.upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = self.headers.get("Host", "")
        up.request(self.command, self.path, body=body or None, headers=headers)
        r = up.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)) if self.command != "HEAD"
                         else r.getheader("Content-Length", "0"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        up.close()
        self.record("verified")

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--log", required=True)
    cfg = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    server.daemon_threads = True
    server.cfg = cfg
    server.upstream = urllib.parse.urlsplit(cfg.upstream)
    server.log_path = cfg.log
    server.log_lock = threading.Lock()
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
