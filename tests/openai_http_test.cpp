// The example OpenAI client (examples/openai_client.hpp) against a fake OpenAI-compatible server
// on 127.0.0.1: what each outcome charges (the agent's balance, the run's consumption events)
// and what reaches the server (max_tokens, the timeout). No test leaves this machine. Time is the
// steady clock, since the calls are real HTTP; nothing sleeps but the wait for the server.
#include "openai_client.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <httplib.h>
#include <mutex>
#include <nlohmann/json.hpp>
#include <safeguards/llm_guard.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// What the server saw of one request.
struct Seen {
  std::string path;
  json body;
  std::string authorization;
  std::string timeout; // X-Stainless-Timeout
};

// The endless stream's length: far more than any socket buffer holds, so a client that kept
// reading would be seen to.
constexpr int endless_chunks = 200'000;

std::string event(std::string_view data) {
  return "data: " + std::string(data) + "\n\n";
}

// One streamed piece of content, in the shape OpenAI sends it (`usage` is null in every chunk
// but the last when `include_usage` is on).
std::string content_chunk(std::string_view text) {
  json chunk = {
      {"id", "chatcmpl-fake"},
      {"object", "chat.completion.chunk"},
      {"model", "gpt-4o-2024-08-06"},
      {"choices",
       json::array({{{"index", 0}, {"delta", {{"content", text}}}, {"finish_reason", nullptr}}})},
      {"usage", nullptr}};
  return event(chunk.dump());
}

const std::vector<std::string> streamed_pieces{"Hello", ",",    " world", "!",
                                               " How",  " are", " you",   "?"};

// The server: the model name picks what it does.
//
//   ok          a reply with usage (cached and reasoning tokens); streamed: 8 pieces, then a
//               usage chunk of 1000 prompt and 12 completion tokens
//   undercount  streamed: the same 8 pieces, but a usage chunk of only 3 completion tokens
//   rate-limited, broken   HTTP 429, HTTP 500
//   no-usage    a reply without usage; streamed: the pieces and [DONE] but no usage chunk
//   malformed   a truncated JSON body; streamed: a truncated event
//   error-event streamed: 3 pieces, then an error event
//   endless     streamed: `endless_chunks` pieces of "tok ", whatever max_tokens says
//   slow        answers only once the test releases it (or stops the server)
class FakeOpenAi {
public:
  FakeOpenAi() {
    // A proxy from the environment must not see requests meant for this machine.
    ::setenv("no_proxy", "127.0.0.1", 1);
    ::setenv("NO_PROXY", "127.0.0.1", 1);
    server_.Post("/v1/chat/completions",
                 [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // The socket listens already, so a request made now would wait in the backlog; but stop()
    // does nothing until the accept loop runs, so wait for that.
    for (int i = 0; i < 5000 && !server_.is_running(); ++i)
      std::this_thread::sleep_for(1ms);
    REQUIRE(server_.is_running());
  }
  FakeOpenAi(const FakeOpenAi&) = delete;
  FakeOpenAi& operator=(const FakeOpenAi&) = delete;
  ~FakeOpenAi() { stop(); }

  /// Releases the slow route and stops; every handler has returned when this does.
  void stop() {
    release();
    if (thread_.joinable()) {
      server_.stop();
      thread_.join();
    }
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    released_cv_.notify_all();
  }

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }
  int port() const { return port_; }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  int endless_sent() const { return endless_sent_; }
  bool endless_write_failed() const { return endless_write_failed_; }

private:
  void handle(const httplib::Request& req, httplib::Response& res) {
    json body = json::parse(req.body, nullptr, false);
    {
      std::lock_guard lock(mutex_);
      seen_.push_back({req.path, body, req.get_header_value("Authorization"),
                       req.get_header_value("X-Stainless-Timeout")});
    }
    const std::string model = body.value("model", "");
    const bool stream = body.value("stream", false);
    if (model == "rate-limited") {
      res.status = 429;
      res.set_header("Retry-After", "20");
      res.set_content(R"({"error": {"message": "Rate limit reached for requests",
                                    "type": "requests", "code": "rate_limit_exceeded"}})",
                      "application/json");
    } else if (model == "broken") {
      res.status = 500;
      res.set_content(R"({"error": {"message": "The server had an error processing your request.",
                                    "type": "server_error"}})",
                      "application/json");
    } else if (model == "malformed") {
      if (stream)
        send_events(res, {content_chunk("Hel"), "data: {\"choices\": [{\"delta\": {\"con\n\n",
                          event("[DONE]")});
      else
        res.set_content(R"({"id": "chatcmpl-fake", "choices": [{"message": {"content": "Hel)",
                        "application/json");
    } else if (model == "endless") {
      res.set_chunked_content_provider(
          "text/event-stream",
          [this](std::size_t, httplib::DataSink& sink) { return endless(sink); });
    } else if (stream) {
      stream_reply(res, model);
    } else {
      if (model == "slow") {
        std::unique_lock lock(mutex_);
        released_cv_.wait_for(lock, 60s, [this] { return released_; });
      }
      json reply = json::parse(R"({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello from the fake server."}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
                  "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 120, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}}})");
      if (model == "no-usage")
        reply.erase("usage");
      res.set_content(reply.dump(), "application/json");
    }
  }

  void stream_reply(httplib::Response& res, const std::string& model) {
    std::vector<std::string> events{event(
        R"({"id":"chatcmpl-fake","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06",)"
        R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
        R"("finish_reason":null}],"usage":null})")};
    for (std::size_t i = 0; i < streamed_pieces.size(); ++i) {
      if (model == "error-event" && i == 3) {
        events.push_back(event(R"({"error":{"message":"overloaded","type":"server_error"}})"));
        break;
      }
      events.push_back(content_chunk(streamed_pieces[i]));
    }
    events.push_back(event(
        R"({"id":"chatcmpl-fake","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06",)"
        R"("choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null})"));
    if (model != "no-usage") {
      const int completion = model == "undercount" ? 3 : 12;
      // Details may be null or missing: the client must read them as zero.
      events.push_back(event(
          R"({"id":"chatcmpl-fake","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06",)"
          R"("choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":)" +
          std::to_string(completion) + R"(,"total_tokens":)" + std::to_string(1000 + completion) +
          R"(,"prompt_tokens_details":null}})"));
    }
    events.push_back(event("[DONE]"));
    send_events(res, std::move(events));
  }

  // Writes until the client hangs up (a write fails) or the stream's end.
  bool endless(httplib::DataSink& sink) {
    const std::string chunk = content_chunk("tok ");
    for (int i = 0; i < endless_chunks; ++i) {
      if (!sink.write(chunk.data(), chunk.size())) {
        endless_write_failed_ = true;
        return false;
      }
      endless_sent_ = i + 1;
    }
    sink.done();
    return true;
  }

  static void send_events(httplib::Response& res, std::vector<std::string> events) {
    res.set_chunked_content_provider(
        "text/event-stream", [events = std::move(events)](std::size_t, httplib::DataSink& sink) {
          for (const auto& e : events)
            if (!sink.write(e.data(), e.size()))
              return false;
          sink.done();
          return true;
        });
  }

  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable released_cv_;
  bool released_ = false;
  std::vector<Seen> seen_;
  std::atomic<int> endless_sent_{0};
  std::atomic<bool> endless_write_failed_{false};
};

// Every route is priced as gpt-4o: 2.5 / 10 / 1.25 (cached) USD per million tokens, so a prompt
// token costs 0.0000025 and a completion token 0.00001.
const PriceTable prices = [] {
  PriceTable table;
  for (const char* model : {"ok", "undercount", "rate-limited", "broken", "no-usage", "malformed",
                            "error-event", "endless", "slow"})
    table.set(
        model,
        {.prompt = Decimal("2.5"), .completion = Decimal("10"), .cached_prompt = Decimal("1.25")});
  return table;
}();

const std::vector<ChatMessage> messages{{"system", "You are terse."}, {"user", "Say hello."}};
const json messages_json = json::array({{{"role", "system"}, {"content", "You are terse."}},
                                        {{"role", "user"}, {"content", "Say hello."}}});

// Every call below estimates 1000 prompt tokens and asks for at most 500: 0.0075 USD set aside
// (0.0025 + 0.005) unless the limits allow fewer.
constexpr LlmRequest request{.prompt_tokens = 1000, .max_completion_tokens = 500};

struct World {
  SharedBudget run;
  BudgetCoordinator coord;
  PoolId pool;
  AgentId agent;

  explicit World(std::vector<Consumption> limits = {}, Decimal money = Decimal(10),
                 std::chrono::steady_clock::duration run_for = 60s)
      : run(Budget(run_for, std::move(limits))),
        pool(coord.create_pool({.name = "p", .initial_budget = Decimal(1000), .priority = 5})),
        agent(coord.create_agent(
            {.name = "writer", .initial_budget = money, .priority = 5, .pool = pool})) {}

  LlmCallContext ctx(const std::string& model) {
    return {.run = &run, .coordinator = &coord, .agent = agent, .prices = &prices, .model = model};
  }

  // The six events a call records, council-style; the duration is real, so only its presence
  // is checked.
  void check_events(const std::string& model, std::int64_t prompt, std::int64_t completion,
                    Decimal usd) const {
    auto events = run.snapshot().consumptions();
    REQUIRE(events.size() == 6);
    CHECK(events[0].consumption() == Consumption::call(1, model));
    CHECK(events[1].consumption().unit() == "second");
    CHECK(events[1].consumption().kind() == model);
    CHECK(events[1].consumption().value() > Decimal());
    CHECK(events[2].consumption() == Consumption::token(prompt, llm_kinds::prompt_tokens(model)));
    CHECK(events[3].consumption() ==
          Consumption::token(completion, llm_kinds::completion_tokens(model)));
    CHECK(events[4].consumption() ==
          Consumption::token(prompt + completion, llm_kinds::total_tokens(model)));
    CHECK(events[5].consumption() == Consumption::cost(usd, model));
    for (const auto& e : events)
      CHECK(e.source() == "writer");
  }

  // The agent paid exactly `usd` of its `money`, and nothing is still set aside.
  void check_money(Decimal usd, Decimal money = Decimal(10)) const {
    CHECK(coord.get_budget(agent) == money - usd);
    const auto m = coord.agent_metrics(agent);
    CHECK(m.used_budget == usd);
    CHECK(m.reserved_budget == Decimal());
    const Budget snapshot = run.snapshot();
    for (const auto& held : snapshot.held())
      CHECK(held == Decimal());
  }
};

} // namespace

TEST_CASE("an answered call is charged its usage, cached and reasoning tokens included") {
  FakeOpenAi server;
  World w;
  const OpenAiClient client(server.base_url(), "test-key", "ok");
  ChatResult r =
      guarded_call(w.ctx("ok"), request, [&](LlmCallGuard& g) { return client.chat(g, messages); });
  CHECK(r.text == "Hello from the fake server.");
  CHECK(r.finish_reason == "stop");
  CHECK(r.charged == Charged::usage);
  CHECK(r.record.usage == LlmUsage{.model = "gpt-4o-2024-08-06",
                                   .prompt_tokens = 1000,
                                   .completion_tokens = 300,
                                   .cached_prompt_tokens = 400,
                                   .reasoning_tokens = 120});
  // 600 × 2.5 + 400 × 1.25 + 300 × 10 per million
  CHECK(r.record.cost == Decimal("0.005"));
  CHECK(r.record.money.charged == Decimal("0.005"));
  CHECK(r.record.money.refunded == Decimal("0.0025"));
  w.check_events("ok", 1000, 300, Decimal("0.005"));
  w.check_money(Decimal("0.005"));

  // What the server was asked: the guard's max_tokens, and how long the client waits (the run
  // has 60 s; whole seconds, truncated).
  auto seen = server.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].path == "/v1/chat/completions");
  CHECK(seen[0].authorization == "Bearer test-key");
  CHECK(seen[0].body["model"] == "ok");
  CHECK(seen[0].body["messages"] == messages_json);
  CHECK(seen[0].body["max_tokens"] == 500);
  CHECK_FALSE(seen[0].body.contains("stream"));
  const int timeout = std::stoi(seen[0].timeout);
  CHECK(timeout >= 55);
  CHECK(timeout <= 60);
}

TEST_CASE("a streamed call is charged the larger of its final usage and what streamed") {
  // "ok" reports 12 completion tokens for 8 pieces, "undercount" only 3: the 8 that arrived are
  // charged then.
  auto [model, completion] = GENERATE(std::pair<std::string, std::int64_t>{"ok", 12},
                                      std::pair<std::string, std::int64_t>{"undercount", 8});
  CAPTURE(model);
  FakeOpenAi server;
  World w;
  const OpenAiClient client(server.base_url(), "test-key", model);
  std::vector<std::string> pieces;
  ChatResult r = guarded_call(w.ctx(model), request, [&](LlmCallGuard& g) {
    return client.chat_stream(g, messages,
                              [&](std::string_view piece) { pieces.emplace_back(piece); });
  });
  CHECK(pieces == streamed_pieces);
  CHECK(r.text == "Hello, world! How are you?");
  CHECK(r.finish_reason == "stop");
  CHECK(r.charged == Charged::usage);
  CHECK(r.record.usage.prompt_tokens == 1000);
  CHECK(r.record.usage.completion_tokens == completion);
  CHECK(r.record.usage.cached_prompt_tokens == 0); // prompt_tokens_details was null
  const Decimal usd = Decimal("0.0025") + Decimal("0.00001") * Decimal(completion);
  CHECK(r.record.cost == usd);
  w.check_events(model, 1000, completion, usd);
  w.check_money(usd);

  auto seen = server.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].body["stream"] == true);
  CHECK(seen[0].body["stream_options"] == json{{"include_usage", true}});
  CHECK(seen[0].body["max_tokens"] == 500);
}

TEST_CASE("HTTP 429 and 500 count the call and charge nothing else") {
  auto [model, status] = GENERATE(std::pair<std::string, long>{"rate-limited", 429},
                                  std::pair<std::string, long>{"broken", 500});
  const bool stream = GENERATE(false, true);
  CAPTURE(model, stream);
  FakeOpenAi server;
  World w;
  const OpenAiClient client(server.base_url(), "test-key", model);
  try {
    guarded_call(w.ctx(model), request, [&](LlmCallGuard& g) {
      return stream ? client.chat_stream(g, messages) : client.chat(g, messages);
    });
    FAIL("no exception");
  } catch (const OpenAiApiError& e) {
    CHECK(e.status() == status);
    // The message is the API's own, read from its error object.
    CHECK_THAT(e.what(),
               Catch::EndsWith(status == 429 ? "HTTP 429: Rate limit reached for requests"
                                             : "HTTP 500: The server had an error processing your "
                                               "request."));
    CHECK_THAT(e.body(), Catch::Contains("\"error\""));
  }
  w.check_events(model, 0, 0, Decimal(0));
  w.check_money(Decimal(0));
}

TEST_CASE("a 200 without usage is charged everything set aside") {
  const bool stream = GENERATE(false, true);
  CAPTURE(stream);
  FakeOpenAi server;
  World w;
  const OpenAiClient client(server.base_url(), "test-key", "no-usage");
  ChatResult r = guarded_call(w.ctx("no-usage"), request, [&](LlmCallGuard& g) {
    return stream ? client.chat_stream(g, messages) : client.chat(g, messages);
  });
  CHECK(r.text == (stream ? "Hello, world! How are you?" : "Hello from the fake server."));
  CHECK(r.charged == Charged::reservation);
  CHECK(r.record.usage.prompt_tokens == 1000);
  CHECK(r.record.usage.completion_tokens == 500);
  CHECK(r.record.cost == Decimal("0.0075"));
  CHECK(r.record.money.refunded == Decimal(0));
  w.check_events("no-usage", 1000, 500, Decimal("0.0075"));
  w.check_money(Decimal("0.0075"));
}

TEST_CASE("malformed JSON in a 200 response is charged everything set aside, then throws") {
  const bool stream = GENERATE(false, true);
  CAPTURE(stream);
  FakeOpenAi server;
  World w;
  const OpenAiClient client(server.base_url(), "test-key", "malformed");
  try {
    guarded_call(w.ctx("malformed"), request, [&](LlmCallGuard& g) {
      return stream ? client.chat_stream(g, messages) : client.chat(g, messages);
    });
    FAIL("no exception");
  } catch (const OpenAiResponseError& e) {
    CHECK_THAT(e.what(), Catch::Contains("not a JSON object"));
    CHECK_THAT(e.what(), Catch::Contains("charged everything set aside"));
    CHECK_THAT(e.what(), Catch::Contains("0.0075 USD"));
  }
  w.check_events("malformed", 1000, 500, Decimal("0.0075"));
  w.check_money(Decimal("0.0075"));
}

TEST_CASE("a stream the guard must cut off: the client stops reading and pays what arrived") {
  // 100 completion tokens allowed, by the run's token limit or by the agent's money (1000
  // prompt tokens 0.0025, 100 completion tokens 0.001). The server ignores max_tokens.
  const bool by_money = GENERATE(false, true);
  CAPTURE(by_money);
  const Decimal money = by_money ? Decimal("0.0035") : Decimal(10);
  World w(by_money ? std::vector<Consumption>{}
                   : std::vector<Consumption>{Consumption::token(1100, "endless:total_tokens")},
          money);
  FakeOpenAi server;
  const OpenAiClient client(server.base_url(), "test-key", "endless");
  ChatResult r =
      guarded_call(w.ctx("endless"), {.prompt_tokens = 1000, .max_completion_tokens = 4000},
                   [&](LlmCallGuard& g) {
                     CHECK(g.max_output_tokens() == 100);
                     return client.chat_stream(g, messages);
                   });
  CHECK(r.charged == Charged::streamed);
  CHECK(r.text.size() == 100 * std::string("tok ").size());
  CHECK(r.record.usage.prompt_tokens == 1000); // the estimate: no usage arrived
  CHECK(r.record.usage.completion_tokens == 100);
  CHECK(r.record.cost == Decimal("0.0035"));
  w.check_events("endless", 1000, 100, Decimal("0.0035"));
  w.check_money(Decimal("0.0035"), money);
  if (!by_money)
    CHECK(*w.run.available("token", "endless:total_tokens") == Decimal(0));

  auto seen = server.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].body["max_tokens"] == 100);
  // The client hung up: the server's writes failed long before the end of the stream.
  server.stop();
  CHECK(server.endless_write_failed());
  CHECK(server.endless_sent() < endless_chunks);
}

TEST_CASE("an error event mid-stream throws and charges what streamed before it") {
  FakeOpenAi server;
  World w;
  const OpenAiClient client(server.base_url(), "test-key", "error-event");
  std::string text;
  try {
    guarded_call(w.ctx("error-event"), request, [&](LlmCallGuard& g) {
      return client.chat_stream(g, messages, [&](std::string_view piece) { text += piece; });
    });
    FAIL("no exception");
  } catch (const OpenAiApiError& e) {
    CHECK(e.status() == 200);
    CHECK_THAT(e.what(), Catch::Contains("overloaded"));
  }
  CHECK(text == "Hello, world");
  // 3 pieces after the 1000-token estimate: 0.0025 + 0.00003
  w.check_events("error-event", 1000, 3, Decimal("0.00253"));
  w.check_money(Decimal("0.00253"));
}

TEST_CASE("a call that times out after the request went out is charged everything set aside") {
  // The run ends in 300 ms, so the client waits no longer; the server answers only when
  // released, after the client has given up.
  FakeOpenAi server;
  World w({}, Decimal(10), 300ms);
  const OpenAiClient client(server.base_url(), "test-key", "slow");
  const auto start = std::chrono::steady_clock::now();
  try {
    guarded_call(w.ctx("slow"), request, [&](LlmCallGuard& g) { return client.chat(g, messages); });
    FAIL("no exception");
  } catch (const OpenAiTransportError& e) {
    CHECK(e.code() == CURLE_OPERATION_TIMEDOUT);
    CHECK_THAT(e.what(), Catch::Contains("charged everything set aside"));
  }
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  server.release();
  w.check_events("slow", 1000, 500, Decimal("0.0075"));
  w.check_money(Decimal("0.0075"));
  auto seen = server.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].timeout == "0"); // under a second, truncated
}

TEST_CASE("no connection: the call counts and nothing else") {
  int port = 0;
  {
    FakeOpenAi gone; // a port that was free a moment ago, and is closed again
    port = gone.port();
  }
  World w;
  const OpenAiClient client("http://127.0.0.1:" + std::to_string(port) + "/v1", "", "ok");
  CHECK_THROWS_AS(
      guarded_call(w.ctx("ok"), request, [&](LlmCallGuard& g) { return client.chat(g, messages); }),
      OpenAiTransportError);
  w.check_events("ok", 0, 0, Decimal(0));
  w.check_money(Decimal(0));
}

TEST_CASE("server-sent events split anywhere, with CRLF, comments and multi-line data") {
  const std::string wire = ": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\n"
                           "data: line2\n\ndata:[DONE]\n\ndata: tail";
  for (std::size_t piece : {std::size_t{1}, std::size_t{3}, std::size_t{7}, wire.size()}) {
    CAPTURE(piece);
    openai_detail::SseParser sse;
    std::vector<std::string> events;
    auto on_event = [&](std::string_view data) {
      events.emplace_back(data);
      return true;
    };
    for (std::size_t at = 0; at < wire.size(); at += piece)
      REQUIRE(sse.feed(std::string_view(wire).substr(at, piece), on_event));
    REQUIRE(sse.finish(on_event));
    CHECK(events == std::vector<std::string>{"{\"a\":1}", "line1\nline2", "[DONE]", "tail"});
  }
}

TEST_CASE("the client's timeout is the guard's time left, at least 1 ms") {
  CHECK(curl_timeout_ms(1500ms) == 1500);
  CHECK(curl_timeout_ms(999us) == 1);
  CHECK(curl_timeout_ms(-5s) == 1);
  CHECK(curl_timeout_ms(std::chrono::steady_clock::duration::max()) > 1'000'000'000L);
}
