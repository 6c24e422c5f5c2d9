// The Replicate backend's protocol layer: model references, input mapping, prices, and the
// parsing of predictions and problem answers. The talking is tested end to end in
// tests/integration/test_replicate.py.
#include "protocol.hpp"

#include <gtest/gtest.h>
#include <limits>
#include <rapidjson/document.h>

namespace kiln::replicate {
namespace {

constexpr const char* k_sdxl_ref =
    "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc";

Request request(uint32_t width, uint32_t height, std::string_view params = "",
                std::string_view format = "png") {
  Request r;
  r.prompt = "a red potion";
  r.negative_prompt = "text";
  r.width = width;
  r.height = height;
  r.format = format;
  r.params_json = params;
  r.seed = 42;
  return r;
}

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  EXPECT_FALSE(d.HasParseError()) << json;
  return d;
}

// A hostile server's 200,000 nested arrays: no prediction, no problem detail, and no stack
// overflow (the parser is iterative; issue 16).
TEST(ReplicateProtocol, DeeplyNestedAnswersAreRefusedWithoutRecursion) {
  std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_FALSE(parse_prediction(deep));
  EXPECT_FALSE(parse_prediction("{\"id\": \"x\", \"status\": " + deep + "}"));
  parse_problem(deep);
  EXPECT_FALSE(find_lost_prediction(deep, ModelRef{}, "{}"));
  EXPECT_FALSE(find_lost_prediction("{\"results\": [" + deep + "]}", ModelRef{}, "{}"));
}

// Ids go into URLs: "../../steal" or one with a space is no prediction (issue 16).
TEST(ReplicateProtocol, PredictionIdsAreCheckedBeforeUse) {
  EXPECT_TRUE(parse_prediction(R"({"id": "q6v4k2m0x1rj00cf2", "status": "starting"})"));
  for (const char* id : {"../../../../steal", "ab cd", "AB12", "", "x/y", "a?b=1"})
    EXPECT_FALSE(parse_prediction(std::string(R"({"id": ")") + id + R"(", "status": "starting"})"))
        << id;
  EXPECT_FALSE(find_lost_prediction(
      R"({"results": [{"id": "../steal", "status": "starting", "input": {}}]})", ModelRef{}, "{}"));
  // Created with such an id: never followed, never created again.
  EXPECT_EQ(classify_create_answer(201, R"({"id": "../../v1/account", "status": "starting"})"),
            CreateAnswer::BadId);
  EXPECT_EQ(classify_create_answer(201, "not json"), CreateAnswer::Unknown);
}

// Wait hints are finite and at most a day, whatever the server says (issue 16).
TEST(ReplicateProtocol, RetryAfterHintsAreClamped) {
  Problem p;
  p.retry_after_s = 1e30;
  EXPECT_EQ(retry_after_ms(p, ""), 86400000);
  p.retry_after_s = std::numeric_limits<double>::infinity();
  EXPECT_EQ(retry_after_ms(p, ""), 86400000);
  p.retry_after_s = 2.5;
  EXPECT_EQ(retry_after_ms(p, ""), 2500);
  p.retry_after_s = -1;
  EXPECT_EQ(retry_after_ms(p, "inf"), 86400000);
  EXPECT_EQ(retry_after_ms(p, "1e300"), 86400000);
  EXPECT_EQ(retry_after_ms(p, "3"), 3000);
}

// The token goes only where it is safe, and only a Replicate token is read (issue 16).
TEST(ReplicateProtocol, TheTokenGoesOnlyToHttpsOrThisMachine) {
  std::string host;
  EXPECT_FALSE(base_url_problem("https://api.replicate.com/v1", &host));
  EXPECT_EQ(host, "api.replicate.com");
  EXPECT_FALSE(base_url_problem("http://127.0.0.1:8080/v1", &host));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_FALSE(base_url_problem("http://localhost/v1"));
  EXPECT_FALSE(base_url_problem("http://[::1]:9/v1"));
  EXPECT_NE(base_url_problem("http://evil.example/v1")->find("unencrypted"), std::string::npos);
  EXPECT_NE(base_url_problem("http://127.0.0.1.evil.example/v1"), std::nullopt);
  EXPECT_TRUE(base_url_problem("https://user:pw@api.replicate.com/v1"));
  EXPECT_TRUE(base_url_problem("ftp://api.replicate.com"));
  EXPECT_FALSE(token_env_problem("REPLICATE_API_TOKEN"));
  EXPECT_FALSE(token_env_problem("KILN_CI_TOKEN"));
  EXPECT_FALSE(token_env_problem("MY_GAME_REPLICATE_TOKEN"));
  for (const char* name : {"AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "replicate_api_token", ""})
    EXPECT_TRUE(token_env_problem(name)) << name;
}

TEST(ReplicateProtocol, ModelReferences) {
  auto official = parse_model_ref("black-forest-labs/flux-schnell");
  ASSERT_TRUE(official);
  EXPECT_TRUE(official->official());
  EXPECT_EQ(family_of(*official), Family::Flux);

  auto versioned = parse_model_ref(k_sdxl_ref);
  ASSERT_TRUE(versioned);
  EXPECT_FALSE(versioned->official());
  EXPECT_EQ(versioned->name, "stability-ai/sdxl");
  EXPECT_EQ(family_of(*versioned), Family::Sdxl);

  auto bare = parse_model_ref(k_sdxl_version);
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->name, "");
  EXPECT_EQ(family_of(*bare), Family::Sdxl);

  EXPECT_EQ(family_of(*parse_model_ref("someone/pixel-art")), Family::Other);
  for (const char* bad : {"flux-schnell", "a/b/c", "a/b:1234", "/x", "a/ b", ""})
    EXPECT_FALSE(parse_model_ref(bad)) << bad;
}

TEST(ReplicateProtocol, FluxPicksTheNearestAspectRatioAndTheSmallestCoveringSize) {
  struct Case {
    uint32_t w, h;
    const char* ratio;
    const char* megapixels;
  } cases[] = {
      {256, 256, "1:1", "0.25"}, {512, 512, "1:1", "0.25"}, {513, 513, "1:1", "1"},
      {1024, 1024, "1:1", "1"},  {1280, 720, "16:9", "1"},  {640, 360, "16:9", "0.25"},
      {800, 200, "21:9", "1"},   {400, 600, "2:3", "0.25"}, {300, 400, "3:4", "0.25"},
      {90, 160, "9:16", "0.25"}, {2048, 2048, "1:1", "1"},  {100, 300, "9:21", "0.25"},
  };
  for (auto& c : cases) {
    FluxShape s = flux_shape(c.w, c.h);
    EXPECT_EQ(s.aspect_ratio, c.ratio) << c.w << "x" << c.h;
    EXPECT_EQ(s.megapixels, c.megapixels) << c.w << "x" << c.h;
  }
}

TEST(ReplicateProtocol, SdxlSizesAreMultiplesOf8AtAboutAMegapixel) {
  for (auto [w, h] :
       {std::pair{256u, 256u}, {1280u, 720u}, {100u, 75u}, {333u, 250u}, {4096u, 1024u}}) {
    auto [sw, sh] = sdxl_size(w, h);
    EXPECT_EQ(sw % 8, 0u);
    EXPECT_EQ(sh % 8, 0u);
    EXPECT_NEAR(double(sw) * sh, 1024.0 * 1024.0, 0.05 * 1024 * 1024) << w << "x" << h;
    EXPECT_NEAR(double(sw) / sh, double(w) / h, 0.03 * w / h) << w << "x" << h;
  }
  EXPECT_EQ(sdxl_size(256, 256), (std::pair{1024u, 1024u}));
}

TEST(ReplicateProtocol, FluxInputsFromTheAssetWithParamsOnTop) {
  auto d = parse(input_json(
      request(1280, 720, R"({"output_format":"webp","go_fast":false})", "jpg"), Family::Flux));
  EXPECT_STREQ(d["prompt"].GetString(), "a red potion");
  EXPECT_EQ(d["seed"].GetUint64(), 42u);
  EXPECT_STREQ(d["aspect_ratio"].GetString(), "16:9");
  EXPECT_STREQ(d["megapixels"].GetString(), "1");
  EXPECT_STREQ(d["output_format"].GetString(), "webp"); // params win
  EXPECT_FALSE(d["go_fast"].GetBool());
  EXPECT_FALSE(d.HasMember("negative_prompt")); // flux-schnell has none: 422 if sent
  EXPECT_FALSE(d.HasMember("width"));

  auto jpg = parse(input_json(request(64, 64, "", "jpg"), Family::Flux));
  EXPECT_STREQ(jpg["output_format"].GetString(), "jpg");
}

TEST(ReplicateProtocol, SdxlAndUnknownModelInputs) {
  auto sdxl = parse(input_json(request(640, 360, R"({"num_inference_steps":30})"), Family::Sdxl));
  EXPECT_STREQ(sdxl["negative_prompt"].GetString(), "text");
  EXPECT_EQ(sdxl["width"].GetUint() % 8, 0u);
  EXPECT_EQ(sdxl["num_inference_steps"].GetInt(), 30);

  auto other = parse(input_json(request(64, 64, R"({"style":"pixel","width":64})"), Family::Other));
  EXPECT_EQ(other.MemberCount(), 4u); // prompt, seed and the params, nothing guessed
  EXPECT_STREQ(other["style"].GetString(), "pixel");

  EXPECT_THROW(input_json(request(64, 64, "[1,2]"), Family::Flux), Error);
  EXPECT_EQ(requested_outputs(request(64, 64, R"({"num_outputs":3})")), 3);
  EXPECT_EQ(requested_outputs(request(64, 64)), 1);
}

TEST(ReplicateProtocol, PriceTableAndOverrides) {
  PriceTable t = default_prices();
  const Price* flux = find_price(t, *parse_model_ref("black-forest-labs/flux-schnell"));
  ASSERT_TRUE(flux);
  EXPECT_EQ(flux->unit, Price::PerImage);
  EXPECT_DOUBLE_EQ(flux->usd, 0.003);
  const Price* sdxl = find_price(t, *parse_model_ref(k_sdxl_ref));
  ASSERT_TRUE(sdxl);
  EXPECT_EQ(sdxl->unit, Price::PerSecond);
  EXPECT_DOUBLE_EQ(sdxl->usd, 0.000725);
  EXPECT_TRUE(find_price(t, *parse_model_ref(k_sdxl_version)));
  EXPECT_FALSE(find_price(t, *parse_model_ref("someone/pixel-art")));

  add_price(t, "someone/pixel-art: 0.0015 per second, 4.5 s typical");
  add_price(t, "black-forest-labs/flux-schnell: 0.004 per image");
  EXPECT_DOUBLE_EQ(find_price(t, *parse_model_ref("someone/pixel-art"))->typical_s, 4.5);
  EXPECT_DOUBLE_EQ(find_price(t, *parse_model_ref("black-forest-labs/flux-schnell"))->usd, 0.004);

  auto message = [&](const char* entry) {
    try {
      add_price(t, entry);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("a/b 0.1 per image").find("no ': ' after the model"), std::string::npos);
  EXPECT_NE(message("a/b: cheap").find("no price in dollars"), std::string::npos);
  EXPECT_NE(message("a/b: 0.1 per call").find("'per image' or 'per second'"), std::string::npos);
  EXPECT_NE(message("a/b: 0.1 per second").find("typical run time"), std::string::npos);
  EXPECT_NE(message("nonsense: 0.1 per image").find("not a model reference"), std::string::npos);
}

TEST(ReplicateProtocol, PredictionObjects) {
  // A sync answer as recorded: still "processing", output complete, no metrics.
  auto p = parse_prediction(
      R"({"id":"ufawqhfynnddngldkgtslldrkq","model":"black-forest-labs/flux-schnell",
    "version":"hidden","input":{"prompt":"x"},"logs":"","output":["https://replicate.delivery/x/out-0.webp"],
    "data_removed":false,"error":null,"status":"processing","created_at":"2024-11-05T10:00:00.000Z",
    "urls":{"get":"https://api.replicate.com/v1/predictions/ufawqhfynnddngldkgtslldrkq",
            "cancel":"https://api.replicate.com/v1/predictions/ufawqhfynnddngldkgtslldrkq/cancel"}})");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, "processing");
  EXPECT_FALSE(p->terminal());
  ASSERT_EQ(p->output.size(), 1u);
  EXPECT_FALSE(p->predict_time_s);
  EXPECT_EQ(p->cancel_url.substr(p->cancel_url.size() - 7), "/cancel");

  auto done = parse_prediction(R"({"id":"a","status":"succeeded","output":null,"data_removed":true,
    "metrics":{"predict_time":10.5}})");
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->terminal());
  EXPECT_TRUE(done->output.empty());
  EXPECT_TRUE(done->data_removed);
  EXPECT_DOUBLE_EQ(*done->predict_time_s, 10.5);

  EXPECT_TRUE(parse_prediction(R"({"id":"a","status":"aborted"})")->terminal());
  EXPECT_FALSE(parse_prediction(R"({"detail":"Not found"})"));
  EXPECT_FALSE(parse_prediction("<html>"));
}

TEST(ReplicateProtocol, ALostCreateIsFoundByItsExactInput) {
  auto flux = *parse_model_ref("black-forest-labs/flux-schnell");
  const char* page = R"({"next":null,"results":[
    {"id":"newer","model":"black-forest-labs/flux-schnell","version":"hidden","status":"failed",
     "input":{"prompt":"a potion","seed":1}},
    {"id":"other","model":"black-forest-labs/flux-schnell","version":"hidden","status":"starting",
     "input":{"prompt":"a potion","seed":2}},
    {"id":"mine","model":"black-forest-labs/flux-schnell","version":"hidden","status":"processing",
     "input":{"seed":1,"prompt":"a potion"}},
    {"id":"older","model":"black-forest-labs/flux-schnell","version":"hidden","status":"succeeded",
     "input":{"prompt":"a potion","seed":1}}]})";
  // Key order does not matter; failed predictions and other inputs are skipped; newest wins.
  EXPECT_EQ(find_lost_prediction(page, flux, R"({"prompt":"a potion","seed":1})"), "mine");
  EXPECT_EQ(find_lost_prediction(page, flux, R"({"prompt":"a potion","seed":3})"), std::nullopt);
  EXPECT_EQ(
      find_lost_prediction(page, *parse_model_ref(k_sdxl_ref), R"({"prompt":"a potion","seed":1})"),
      std::nullopt);
  EXPECT_EQ(find_lost_prediction("<html>", flux, "{}"), std::nullopt);
}

// A create of this run is looked for among predictions created after it was sent only, and never
// among the ones this run already knows: an older identical prediction is not this create's.
TEST(ReplicateProtocol, ALostCreateIsNotMistakenForAnOlderIdenticalOne) {
  auto flux = *parse_model_ref("black-forest-labs/flux-schnell");
  const char* page = R"({"next":null,"results":[
    {"id":"gone","model":"black-forest-labs/flux-schnell","version":"hidden","status":"succeeded",
     "data_removed":true,"created_at":"2024-05-01T12:00:30.000000Z","input":{"prompt":"a potion"}},
    {"id":"new","model":"black-forest-labs/flux-schnell","version":"hidden","status":"starting",
     "created_at":"2024-05-01T12:00:10.250000Z","input":{"prompt":"a potion"}},
    {"id":"old","model":"black-forest-labs/flux-schnell","version":"hidden","status":"succeeded",
     "created_at":"2024-05-01T12:00:00.000000Z","input":{"prompt":"a potion"}}]})";
  const char* input = R"({"prompt":"a potion"})";
  const double noon = 1714564800; // 2024-05-01T12:00:00Z
  // Outputs removed: it cannot deliver, skipped.
  EXPECT_EQ(find_lost_prediction(page, flux, input), "new");
  EXPECT_EQ(find_lost_prediction(page, flux, input, {noon + 5, {}}), "new");
  EXPECT_EQ(find_lost_prediction(page, flux, input, {noon + 10.25, {}}), "new"); // inclusive
  EXPECT_EQ(find_lost_prediction(page, flux, input, {noon + 10.5, {}}), std::nullopt);
  EXPECT_EQ(find_lost_prediction(page, flux, input, {noon + 5, {"new"}}), std::nullopt);
  // No bound (a killed run's create, its time unknown): any identical one this run does not own.
  EXPECT_EQ(find_lost_prediction(page, flux, input, {std::nullopt, {"new"}}), "old");
  // A result without a readable created_at is kept: paying twice is the worse mistake.
  const char* undated = R"({"results":[{"id":"x","model":"black-forest-labs/flux-schnell",
    "status":"processing","input":{"prompt":"a potion"}}]})";
  EXPECT_EQ(find_lost_prediction(undated, flux, input, {noon, {}}), "x");
}

TEST(ReplicateProtocol, OnlyADefiniteAnswerToACreateSettlesIt) {
  const char* created = R"({"id":"abc","status":"starting","input":{}})";
  EXPECT_EQ(classify_create_answer(201, created), CreateAnswer::Created);
  EXPECT_EQ(classify_create_answer(200, created), CreateAnswer::Created);
  // Possibly created, billed: no answer, a gateway's page, a body cut short, 408.
  EXPECT_EQ(classify_create_answer(0, ""), CreateAnswer::Unknown);
  const char* nginx = "<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 "
                      "Gateway Time-out</h1></center><hr><center>nginx</center></body></html>";
  EXPECT_EQ(classify_create_answer(504, nginx), CreateAnswer::Unknown);
  EXPECT_EQ(classify_create_answer(500, R"({"title":"Internal Server Error","status":500})"),
            CreateAnswer::Unknown);
  EXPECT_EQ(classify_create_answer(502, ""), CreateAnswer::Unknown);
  EXPECT_EQ(classify_create_answer(408, ""), CreateAnswer::Unknown);
  EXPECT_EQ(classify_create_answer(201, R"({"id":"abc","status":"star)"), CreateAnswer::Unknown);
  EXPECT_EQ(classify_create_answer(201, nginx), CreateAnswer::Unknown);
  EXPECT_EQ(classify_create_answer(201, R"({"detail":"ok"})"), CreateAnswer::Unknown);
  // Definite refusals: nothing was created.
  for (int status : {400, 401, 402, 403, 404, 409, 422, 429})
    EXPECT_EQ(classify_create_answer(status, R"({"detail":"no"})"), CreateAnswer::Refused)
        << status;
}

TEST(ReplicateProtocol, TimesOfPredictionsAndAnswers) {
  const double noon = 1714564800; // 2024-05-01T12:00:00Z
  EXPECT_EQ(parse_iso_time("2024-05-01T12:00:00Z"), noon);
  EXPECT_DOUBLE_EQ(*parse_iso_time("2024-05-01T12:00:00.455455Z"), noon + 0.455455);
  EXPECT_EQ(parse_iso_time("2024-05-01T14:00:00+02:00"), noon);
  EXPECT_EQ(parse_iso_time("2024-05-01T11:30:00.5-00:30"), noon + 0.5);
  EXPECT_EQ(parse_iso_time("2024-05-01T12:00:00"), std::nullopt); // no zone
  EXPECT_EQ(parse_iso_time("2024-05-01T12:00:00Zjunk"), std::nullopt);
  EXPECT_EQ(parse_iso_time(""), std::nullopt);
  EXPECT_EQ(parse_http_date("Wed, 01 May 2024 12:00:00 GMT"), noon);
  EXPECT_EQ(parse_http_date("Wed, 01 May 2024 12:00:00 GMT trailing"), std::nullopt);
  EXPECT_EQ(parse_http_date("soon"), std::nullopt);
}

TEST(ReplicateProtocol, ProblemsAndRetryAfter) {
  Problem p = parse_problem(R"({"title":"Input validation failed","status":422,
    "detail":"- input.num_inference_steps: Must be less than or equal to 4\n- input.x: nope\n",
    "invalid_fields":[{"type":"number_lte","field":"input.num_inference_steps","description":"Must be less than or equal to 4"}]})");
  EXPECT_EQ(p.detail,
            "- input.num_inference_steps: Must be less than or equal to 4; - input.x: nope");
  ASSERT_EQ(p.invalid_fields.size(), 1u);
  EXPECT_EQ(p.invalid_fields[0], "input.num_inference_steps (number_lte)");
  EXPECT_EQ(retry_after_ms(p, ""), -1);

  Problem throttled = parse_problem(
      R"({"title":"Request was throttled.","detail":"Request was throttled. Your rate limit resets in ~5s.","status":429,"retry_after":5})");
  EXPECT_EQ(retry_after_ms(throttled, ""), 5000);
  EXPECT_EQ(retry_after_ms(throttled, "30"), 5000); // the body wins
  EXPECT_EQ(retry_after_ms(Problem{}, "2"), 2000);
  EXPECT_EQ(retry_after_ms(Problem{}, "Thu, 01 Jan 2009 00:00:00 GMT"), 0); // in the past
  EXPECT_EQ(retry_after_ms(Problem{}, "soon"), -1);

  Problem gateway = parse_problem("<html><body><h1>502 Bad Gateway</h1></body></html>\nmore");
  EXPECT_EQ(gateway.detail, "<html><body><h1>502 Bad Gateway</h1></body></html>");
}

TEST(ReplicateProtocol, CancelAfterDurations) {
  EXPECT_EQ(cancel_after(360), "6m");
  EXPECT_EQ(cancel_after(90), "90s");
  EXPECT_EQ(cancel_after(7200), "2h");
  EXPECT_EQ(cancel_after(3), "5s"); // Replicate's minimum
}

} // namespace
} // namespace kiln::replicate
