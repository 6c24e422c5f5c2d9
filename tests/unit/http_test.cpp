// The host's HTTP client against a real server on 127.0.0.1 that drops, truncates, stalls and
// redirects on request.
#include "http.hpp"
#include "image.hpp"
#include "plugins.hpp"
#include "server_process.hpp"
#include "test_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kiln::host {
namespace {

using test::ServerProcess;
using test::TempDir;

// A loopback port with no listener: bound, read back and closed again.
int unused_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

HttpRequest get(std::string url) {
  HttpRequest req;
  req.url = std::move(url);
  return req;
}

class Http : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    s_server = new ServerProcess({KILN_PYTHON, KILN_TEST_SERVERS "/http_test_server.py"});
  }
  static void TearDownTestSuite() { delete s_server; }
  std::string url(const std::string& path) { return s_server->url(path); }

  Log log{KILN_LOG_ERROR};
  HttpClient client{log};
  static ServerProcess* s_server;
};
ServerProcess* Http::s_server = nullptr;

TEST_F(Http, SendsMethodHeadersBodyAndUserAgent) {
  HttpRequest req;
  req.method = "POST";
  req.url = url("/echo?x=1");
  req.headers = {{"Content-Type", "application/json"}, {"Authorization", "Bearer t0ken"}};
  req.body = R"({"input":{}})";
  auto r = client.send(req);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "application/json");
  rapidjson::Document doc;
  doc.Parse(r->body.c_str());
  EXPECT_STREQ(doc["method"].GetString(), "POST");
  EXPECT_STREQ(doc["path"].GetString(), "/echo?x=1");
  EXPECT_STREQ(doc["body"].GetString(), R"({"input":{}})");
  EXPECT_STREQ(doc["headers"]["authorization"].GetString(), "Bearer t0ken");
  EXPECT_EQ(std::string(doc["headers"]["user-agent"].GetString()), HttpClient::user_agent());
}

TEST_F(Http, AnyStatusIsAResponseAndHeadersAreCaseInsensitive) {
  auto r = client.send(get(url("/status/429")));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(r->body, "status 429");
  EXPECT_EQ(r->header("X-TEST"), "second"); // the last of repeated headers
}

TEST_F(Http, StreamsToAFileAndFollowsRedirects) {
  TempDir dir;
  HttpRequest req;
  req.url = url("/redirect/100000");
  req.output_path = dir / "out.bin";
  auto r = client.send(req);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body_bytes, 100000u);
  EXPECT_TRUE(r->body.empty());
  auto bytes = read_file(dir / "out.bin");
  ASSERT_TRUE(bytes);
  EXPECT_EQ(bytes->size(), 100000u);
  EXPECT_EQ(uint8_t((*bytes)[300]), 300 % 251);
}

TEST_F(Http, ATruncatedBodyIsRetryable) {
  auto r = client.send(get(url("/truncate/10000")));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().category, KILN_ERROR_RETRYABLE);
  EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;
}

TEST_F(Http, ADroppedConnectionIsRetryable) {
  auto r = client.send(get(url("/drop")));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().category, KILN_ERROR_RETRYABLE) << r.error().message;
}

TEST_F(Http, ATimeoutIsRetryable) {
  HttpRequest req;
  req.url = url("/slow/3000");
  req.timeout_ms = 300;
  auto r = client.send(req);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().category, KILN_ERROR_RETRYABLE);
  EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().message;
}

TEST_F(Http, ARefusedConnectionIsRetryable) {
  auto r = client.send(get("http://127.0.0.1:" + std::to_string(unused_port()) + "/"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().category, KILN_ERROR_RETRYABLE) << r.error().message;
}

TEST_F(Http, ABodyOverTheCapIsRefused) {
  HttpRequest req;
  req.url = url("/bytes/5000");
  req.max_bytes = 4096;
  auto r = client.send(req);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().category, KILN_ERROR_PERMANENT);
  EXPECT_NE(r.error().message.find("larger than 4096 bytes"), std::string::npos);
}

TEST_F(Http, ErrorsNeverShowQueryStringsOrHeaders) {
  HttpRequest req;
  req.url = url("/drop?token=s3cr3t-value");
  req.headers = {{"Authorization", "Bearer s3cr3t-header"}};
  auto r = client.send(req);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message.find("s3cr3t"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("GET http://127.0.0.1:"), std::string::npos);
}

TEST_F(Http, OnlyHttpAndHttpsAreSpoken) {
  auto r = client.send(get("file:///etc/passwd"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().category, KILN_ERROR_PERMANENT);
}

// A plugin reaches the same client through the C ABI (kiln_host_api::http_send).
class PluginHttp : public Http {
protected:
  PluginRegistry registry{log};
  Diagnostics diag{"assets.toml", std::make_shared<const std::string>()};
  TempDir work;

  void SetUp() override { registry.load_directory(FIXTURE_DIR_good_backend); }

  kiln_result generate(const std::string& fetch_url, const std::string& secret = "") {
    PluginSettings settings;
    auto text = [](const std::string& v) {
      SettingValue s;
      s.type = SettingValue::Type::String;
      s.string_value = v;
      return s;
    };
    settings.values = {
        {"label", text("x")}, {"fetch_url", text(fetch_url)}, {"secret", text(secret)}};
    auto backend = registry.instantiate(*registry.find("solid"), &settings, diag);
    EXPECT_TRUE(backend) << diag.text();
    kiln_asset asset{};
    asset.struct_size = sizeof asset;
    std::string dir = work.path().string();
    kiln_request q{};
    q.struct_size = sizeof q;
    q.asset = &asset;
    q.work_dir = {dir.data(), dir.size()};
    kiln_result r = registry.make_result("solid");
    backend->plugin().backend()->generate(backend->handle(), &q, &r);
    return r;
  }
};

TEST_F(PluginHttp, ABackendDownloadsThroughTheHost) {
  kiln_result r = generate(url("/png/40x30"));
  ASSERT_FALSE(r.failed()) << r.message;
  ASSERT_EQ(r.image_file, (work / "download").string());
  auto image = decode_image(*read_file(r.image_file));
  ASSERT_TRUE(image) << image.error().message;
  EXPECT_EQ(image->width, 40u);
  EXPECT_EQ(image->height, 30u);
}

TEST_F(PluginHttp, TransportFailuresKeepTheirCategory) {
  kiln_result r = generate(url("/drop"));
  EXPECT_EQ(r.category, KILN_ERROR_RETRYABLE) << r.message;
  r = generate(url("/status/404"));
  EXPECT_EQ(r.category, KILN_ERROR_PERMANENT);
  EXPECT_EQ(r.message, "unexpected answer 404");
}

TEST_F(PluginHttp, SecretsAPluginRegistersAreRedacted) {
  generate(url("/png/4x4"), "tok-123456");
  EXPECT_EQ(log.redact("Authorization: Bearer tok-123456"), "Authorization: Bearer [REDACTED]");
}

TEST(DataUri, DecodesBase64AndPercentEncoding) {
  EXPECT_EQ(*decode_data_uri("data:application/octet-stream;base64,aGVsbG8gd29ybGQ="),
            "hello world");
  EXPECT_EQ(*decode_data_uri("data:,a%20b"), "a b");
  EXPECT_FALSE(decode_data_uri("data:;base64,!!!!"));
  EXPECT_FALSE(decode_data_uri("data:nocomma"));
}

TEST(DataUri, IsServedByTheClientToMemoryOrFile) {
  Log log{KILN_LOG_ERROR};
  HttpClient client(log);
  TempDir dir;
  HttpRequest req;
  req.url = "data:image/png;base64,iVBORw0KGgo=";
  req.output_path = dir / "x.png";
  auto r = client.send(req);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(*read_file(dir / "x.png"), std::string("\x89PNG\r\n\x1a\n", 8));
}

} // namespace
} // namespace kiln::host
