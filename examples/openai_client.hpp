// OpenAiClient: a small OpenAI-compatible chat-completions client (libcurl, nlohmann-json) that
// makes every call through an LlmCallGuard. Copy it into your project and adapt it; the example
// program is openai_http.cpp, and tests/openai_http_test.cpp runs it against a local fake server.
//
// What each outcome charges. The guard records one `call` in every case, and besides that:
//
// - a 2xx response with `usage`: that usage (`commit`); for a stream, the larger of the final
//   usage chunk and what streamed, count by count;
// - a 2xx response without `usage` (a stream: `data: [DONE]` but no usage chunk): everything set
//   aside (`commit_reserved`), because the provider did the work and nobody knows how much;
// - malformed JSON, or an impossible usage, in a 2xx response: the same, then OpenAiResponseError;
// - a non-2xx status (429, 500, 401, ...): nothing, since no tokens were produced; then
//   OpenAiApiError with the status;
// - a stream cut off because `guard.should_stop()`: what arrived (`commit_reported`);
// - an error event or a dropped connection in the middle of a stream: what arrived; then throws;
// - a non-streamed call that timed out after the request went out: everything set aside (the
//   provider answers and bills it whether we wait or not); then OpenAiTransportError;
// - no connection, or a time-out before the request went out: nothing; then OpenAiTransportError.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <curl/curl.h>
#include <exception>
#include <fmt/format.h>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <safeguards/llm_guard.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

/// One message of a chat: `role` is "system", "user" or "assistant".
struct ChatMessage {
  std::string role;
  std::string content;
};

/// How a finished call's charge was decided.
enum class Charged {
  usage,       ///< the API's usage report (for a stream, the larger of report and stream)
  reservation, ///< everything the guard set aside: the response carried no usage
  streamed     ///< what arrived before the guard stopped the stream
};

constexpr std::string_view to_string(Charged c) noexcept {
  switch (c) {
  case Charged::usage:
    return "the reported usage";
  case Charged::reservation:
    return "everything set aside (no usage in the response)";
  case Charged::streamed:
    return "what streamed before the guard stopped it";
  }
  return "?";
}

/// A finished call: the reply and what the guard recorded for it.
struct ChatResult {
  std::string text;
  std::string finish_reason; ///< "stop", "length", ...; empty for a stream the guard cut off
  safeguards::LlmCallRecord record;
  Charged charged = Charged::usage;
};

/// The API answered with an error: a non-2xx status, or an error event inside a stream (status
/// 200 then). Nothing but the call is charged for a status; an error mid-stream charges what
/// streamed before it.
class OpenAiApiError : public std::runtime_error {
public:
  OpenAiApiError(long status, std::string body, const std::string& message)
      : std::runtime_error(message), status_(status), body_(std::move(body)) {}
  long status() const noexcept { return status_; }
  /// The response body as it came (an OpenAI error object, usually).
  const std::string& body() const noexcept { return body_; }

private:
  long status_;
  std::string body_;
};

/// A 2xx response we could not read (malformed JSON, an impossible usage report). The provider
/// did the work, so everything set aside was charged before this was thrown.
class OpenAiResponseError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// libcurl could not complete the exchange (no connection, time-out, connection dropped).
class OpenAiTransportError : public std::runtime_error {
public:
  OpenAiTransportError(CURLcode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  CURLcode code() const noexcept { return code_; }

private:
  CURLcode code_;
};

/// A prompt's size for `LlmRequest::prompt_tokens`, before a tokenizer has seen it: a quarter of
/// the bytes, rounded up (about right for English with OpenAI's tokenizers), plus the 3 tokens
/// each message and the reply's start add in OpenAI's chat format. Only the reservation rests on
/// it; the usage the API reports is what is charged.
inline std::int64_t estimate_prompt_tokens(const std::vector<ChatMessage>& messages) {
  std::int64_t tokens = 3;
  for (const auto& m : messages)
    tokens += 3 + static_cast<std::int64_t>((m.role.size() + m.content.size() + 3) / 4);
  return tokens;
}

/// The client's wait for one call: what the guard says is left (the run's deadline, the model's
/// `second` limit), in whole milliseconds. At least 1, because 0 means "wait forever" to libcurl;
/// `duration::max()` (no run budget) becomes the largest timeout libcurl takes.
template <class Rep, class Period>
long curl_timeout_ms(std::chrono::duration<Rep, Period> left) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(left).count();
  if (ms < 1)
    return 1;
  return ms > std::numeric_limits<long>::max() ? std::numeric_limits<long>::max()
                                               : static_cast<long>(ms);
}

namespace openai_detail {

inline bool is_success(long status) {
  return status >= 200 && status < 300;
}

// A count of the usage object, 0 when absent or null (`*_details` often are).
inline std::int64_t count_at(const nlohmann::json& object, const char* key) {
  if (object.is_null())
    return 0;
  if (!object.is_object())
    throw OpenAiResponseError(fmt::format("usage: expected an object, got {}", object.dump()));
  auto it = object.find(key);
  if (it == object.end() || it->is_null())
    return 0;
  if (!it->is_number_integer())
    throw OpenAiResponseError(fmt::format("usage: \"{}\" is not an integer: {}", key, it->dump()));
  return it->get<std::int64_t>();
}

inline const nlohmann::json& member(const nlohmann::json& object, const char* key) {
  static const nlohmann::json null;
  if (!object.is_object())
    return null;
  auto it = object.find(key);
  return it == object.end() ? null : *it;
}

// The `usage` of a response or of a stream's final chunk; nullopt when there is none (`null` in
// every chunk but the last when `include_usage` is on). Throws OpenAiResponseError for a usage
// that is there but unreadable or impossible.
inline std::optional<safeguards::LlmUsage> usage_of(const nlohmann::json& response) {
  const nlohmann::json& u = member(response, "usage");
  if (u.is_null())
    return std::nullopt;
  safeguards::LlmUsage usage{
      .prompt_tokens = count_at(u, "prompt_tokens"),
      .completion_tokens = count_at(u, "completion_tokens"),
      .cached_prompt_tokens = count_at(member(u, "prompt_tokens_details"), "cached_tokens"),
      .reasoning_tokens = count_at(member(u, "completion_tokens_details"), "reasoning_tokens")};
  if (const auto& model = member(response, "model"); model.is_string())
    usage.model = model.get<std::string>();
  if (auto problem = safeguards::usage_problem(usage); !problem.empty())
    throw OpenAiResponseError(fmt::format("impossible usage ({}): {}", problem, u.dump()));
  return usage;
}

inline std::string string_at(const nlohmann::json& object, const char* key) {
  const nlohmann::json& v = member(object, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

// The message of an OpenAI error body (`{"error": {"message": ...}}`), else the body's start.
inline std::string error_message(const std::string& body) {
  auto parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (std::string m = string_at(member(parsed, "error"), "message"); !m.empty())
    return m;
  if (const auto& e = member(parsed, "error"); e.is_string())
    return e.get<std::string>();
  return body.substr(0, 200);
}

// Server-sent events, as far as the chat API uses them: `data:` lines, an empty line ending an
// event, `:` comments (some proxies send them to keep the connection open), other fields
// ignored. Bytes come in arbitrary pieces, so an incomplete line waits for the next piece.
class SseParser {
public:
  // Calls on_event(data) per event; stops and returns false as soon as on_event does.
  template <class OnEvent>
  bool feed(std::string_view bytes, OnEvent&& on_event) {
    pending_.append(bytes);
    std::size_t start = 0;
    bool go_on = true;
    while (go_on) {
      const std::size_t end = pending_.find('\n', start);
      if (end == std::string::npos)
        break;
      go_on = on_line(std::string_view(pending_.data() + start, end - start), on_event);
      start = end + 1;
    }
    pending_.erase(0, start);
    return go_on;
  }

  // The stream ended: an event without its closing empty line still counts.
  template <class OnEvent>
  bool finish(OnEvent&& on_event) {
    const std::string last = std::exchange(pending_, {});
    const bool go_on = last.empty() || on_line(last, on_event);
    return go_on && on_line({}, on_event);
  }

private:
  template <class OnEvent>
  bool on_line(std::string_view line, OnEvent& on_event) {
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (line.empty()) {
      if (!has_data_)
        return true;
      has_data_ = false;
      std::string data = std::exchange(data_, {});
      return on_event(std::string_view(data));
    }
    if (line.front() == ':' || line.substr(0, 5) != "data:")
      return true;
    line.remove_prefix(5);
    if (!line.empty() && line.front() == ' ')
      line.remove_prefix(1);
    if (has_data_)
      data_ += '\n'; // a multi-line event's lines are joined, as the SSE standard says
    data_.append(line);
    has_data_ = true;
    return true;
  }

  std::string pending_;
  std::string data_;
  bool has_data_ = false;
};

struct CurlDeleter {
  void operator()(CURL* handle) const noexcept { curl_easy_cleanup(handle); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const noexcept { curl_slist_free_all(list); }
};

// libcurl's global state, set up once: curl_easy_init would do it on first use, but not safely
// when two threads make their first call at the same time. A function-local static is.
inline void init_curl_once() {
  struct Global {
    Global() {
      if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        throw std::runtime_error("curl_global_init failed");
    }
    ~Global() { curl_global_cleanup(); }
    Global(const Global&) = delete;
    Global& operator=(const Global&) = delete;
  };
  static const Global global;
}

// What one POST brought back.
struct Exchange {
  CURLcode code = CURLE_OK;
  long status = 0;
  bool request_sent = false; // some of the request left this machine
  std::string body;          // the whole body, or only a non-2xx one when streaming
  std::string curl_error;
  std::exception_ptr failure; // thrown inside the write callback
};

// The write callback's state. `on_data` (streams) takes a 2xx body piece by piece and returns
// false to abort the transfer; without it the body is collected.
struct Receiver {
  CURL* handle = nullptr;
  const std::function<bool(std::string_view)>* on_data = nullptr;
  Exchange* exchange = nullptr;

  static std::size_t write(char* data, std::size_t size, std::size_t count, void* self) {
    auto& r = *static_cast<Receiver*>(self);
    const std::size_t n = size * count;
    // Exceptions must not unwind through libcurl's C frames: keep one and abort instead.
    try {
      if (r.exchange->status == 0)
        curl_easy_getinfo(r.handle, CURLINFO_RESPONSE_CODE, &r.exchange->status);
      std::string_view bytes(data, n);
      if (r.on_data == nullptr || !is_success(r.exchange->status)) {
        r.exchange->body.append(bytes);
        return n;
      }
      return (*r.on_data)(bytes) ? n : 0; // anything but n makes libcurl abort
    } catch (...) {
      r.exchange->failure = std::current_exception();
      return 0;
    }
  }
};

} // namespace openai_detail

/// An OpenAI-compatible chat-completions client whose every call runs under an `LlmCallGuard`:
/// it asks for `guard.max_output_tokens()` tokens, waits at most `guard.time_left()`, and
/// commits what the call used (see the list at the top of this file). The guard's context must
/// name the model this client asks for, since that is the model it prices. Thread-safe: each
/// call has its own libcurl handle.
///
/// **Example**
/// ```
/// OpenAiClient client("https://api.openai.com/v1", key, "gpt-4o-mini");
/// ChatResult r = guarded_call(ctx, {.prompt_tokens = estimate_prompt_tokens(messages),
///                                   .max_completion_tokens = 300},
///                             [&](LlmCallGuard& g) { return client.chat(g, messages); });
/// ```
class OpenAiClient {
public:
  /// `base_url` up to and including the version, e.g. "https://api.openai.com/v1"; an empty
  /// `api_key` sends no Authorization header (local servers often need none).
  OpenAiClient(std::string base_url, std::string api_key, std::string model)
      : base_url_(std::move(base_url)), api_key_(std::move(api_key)), model_(std::move(model)) {
    while (!base_url_.empty() && base_url_.back() == '/')
      base_url_.pop_back();
    openai_detail::init_curl_once();
  }

  const std::string& model() const noexcept { return model_; }
  std::string url() const { return base_url_ + "/chat/completions"; }

  /// One call, answered whole. Commits the guard; throws as the list at the top of the file says.
  ChatResult chat(safeguards::LlmCallGuard& guard, const std::vector<ChatMessage>& messages) const {
    openai_detail::Exchange ex = post(request(guard, messages, false), guard, nullptr);
    if (ex.failure)
      std::rethrow_exception(ex.failure);
    if (ex.code != CURLE_OK) {
      // A request that went out is answered whole whether we wait for it or not, and billed:
      // charge it as if it had used everything it may. One that never left costs nothing.
      if (ex.code == CURLE_OPERATION_TIMEDOUT && ex.request_sent)
        throw OpenAiTransportError(ex.code, transport_message(ex) + charge_reserved(guard));
      throw OpenAiTransportError(ex.code, transport_message(ex)); // the guard records the call
    }
    if (!openai_detail::is_success(ex.status))
      throw api_error(ex.status, std::move(ex.body)); // no tokens were produced

    auto reply = nlohmann::json::parse(ex.body, nullptr, /*allow_exceptions=*/false);
    if (reply.is_discarded() || !reply.is_object())
      throw OpenAiResponseError(fmt::format("{}: HTTP {} with a body that is not a JSON object: "
                                            "{:.200}{}",
                                            url(), ex.status, ex.body, charge_reserved(guard)));
    ChatResult result;
    std::optional<safeguards::LlmUsage> usage;
    try {
      const auto& choice = openai_detail::member(reply, "choices");
      const auto& first = choice.is_array() && !choice.empty() ? choice[0] : choice;
      result.text = openai_detail::string_at(openai_detail::member(first, "message"), "content");
      result.finish_reason = openai_detail::string_at(first, "finish_reason");
      usage = openai_detail::usage_of(reply);
    } catch (const OpenAiResponseError& e) {
      throw OpenAiResponseError(fmt::format("{}: {}{}", url(), e.what(), charge_reserved(guard)));
    }
    if (!usage) {
      // The provider did the work and billed it, but nobody knows how much: the only charge
      // that cannot be too low is everything the call was allowed.
      result.record = guard.commit_reserved();
      result.charged = Charged::reservation;
      return result;
    }
    result.record = guard.commit(*usage);
    return result;
  }

  /// One call, streamed: `on_text` (if given) sees each piece of the reply as it arrives.
  /// Commits the guard; throws as the list at the top of this file says.
  ///
  /// Each piece of text counts as one output token, charged at once (`add_output_tokens(1)`).
  /// OpenAI-compatible servers send what they have decoded, at least a token per piece and
  /// usually exactly one, so the count stays at or just below the truth: the final usage, when
  /// it comes, is then the larger number and is what `commit` charges, and a stream cut short
  /// is charged no more than it delivered. (Counting characters / 4 would overcount short
  /// pieces, and `commit` charges the larger of stream and report, so the overcount would
  /// stick.) Tokens that never stream (reasoning, with OpenAI) are in the final usage.
  ChatResult chat_stream(safeguards::LlmCallGuard& guard, const std::vector<ChatMessage>& messages,
                         const std::function<void(std::string_view)>& on_text = {}) const {
    ChatResult result;
    std::optional<safeguards::LlmUsage> usage;
    bool done = false;       // `data: [DONE]` arrived
    bool stopped = false;    // we cut the stream because the guard said so
    std::string malformed;   // why a 2xx stream could not be read
    std::string error_event; // an error the server sent inside the stream

    auto on_event = [&](std::string_view data) {
      if (data == "[DONE]") {
        done = true;
        return true;
      }
      auto chunk = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
      if (chunk.is_discarded() || !chunk.is_object()) {
        malformed = fmt::format("an event that is not a JSON object: {:.200}", data);
        return false;
      }
      if (const auto& e = openai_detail::member(chunk, "error"); !e.is_null()) {
        error_event = std::string(data);
        return false;
      }
      try {
        if (auto u = openai_detail::usage_of(chunk))
          usage = u; // the final chunk, whose `choices` is empty
      } catch (const OpenAiResponseError& e) {
        malformed = e.what();
        return false;
      }
      const auto& choices = openai_detail::member(chunk, "choices");
      if (!choices.is_array())
        return true;
      for (const auto& choice : choices) {
        const auto& delta = openai_detail::member(choice, "delta");
        std::string text = openai_detail::string_at(delta, "content");
        // Thinking that some servers stream (DeepSeek, vLLM) is billed output too.
        const bool thinking = !openai_detail::string_at(delta, "reasoning_content").empty();
        const std::int64_t tokens = (text.empty() ? 0 : 1) + (thinking ? 1 : 0);
        if (tokens > 0) {
          // Checked before the piece is taken, so that what is charged and what the caller
          // got are the same pieces.
          if (guard.should_stop(tokens)) {
            stopped = true;
            return false; // aborts the transfer: we stop reading and hang up
          }
          guard.add_output_tokens(tokens);
          if (!text.empty()) {
            result.text += text;
            if (on_text)
              on_text(text);
          }
        }
        if (auto reason = openai_detail::string_at(choice, "finish_reason"); !reason.empty())
          result.finish_reason = std::move(reason);
      }
      return true;
    };
    openai_detail::SseParser sse;
    const std::function<bool(std::string_view)> on_data = [&](std::string_view bytes) {
      return sse.feed(bytes, on_event);
    };
    openai_detail::Exchange ex = post(request(guard, messages, true), guard, &on_data);
    if (ex.code == CURLE_OK && openai_detail::is_success(ex.status))
      sse.finish(on_event); // a last event without its closing empty line

    if (ex.failure)
      std::rethrow_exception(ex.failure); // on_text threw: the guard records what streamed
    if (stopped) {
      // Providers stop generating soon after the reader hangs up, so what arrived is about
      // what is billed; a few tokens in flight may be billed and not charged here.
      result.record = guard.commit_reported();
      result.charged = Charged::streamed;
      result.finish_reason.clear();
      return result;
    }
    if (!malformed.empty())
      throw OpenAiResponseError(fmt::format("{}: HTTP {} stream: {}{}", url(), ex.status, malformed,
                                            charge_reserved(guard)));
    if (!error_event.empty())
      throw api_error(ex.status, std::move(error_event)); // charges what streamed before it
    if (ex.code != CURLE_OK)
      throw OpenAiTransportError(ex.code, transport_message(ex)); // charges what streamed
    if (!openai_detail::is_success(ex.status))
      throw api_error(ex.status, std::move(ex.body)); // no tokens were produced
    if (usage) {
      result.record = guard.commit(*usage); // the larger of report and stream, count by count
      return result;
    }
    if (!done)
      throw OpenAiTransportError(CURLE_PARTIAL_FILE,
                                 fmt::format("{}: the stream ended before `data: [DONE]`", url()));
    // A complete stream without usage (a server that ignores `include_usage`): as for a whole
    // response without usage, the only safe charge is everything set aside.
    result.record = guard.commit_reserved();
    result.charged = Charged::reservation;
    return result;
  }

private:
  nlohmann::json request(const safeguards::LlmCallGuard& guard,
                         const std::vector<ChatMessage>& messages, bool stream) const {
    auto list = nlohmann::json::array();
    for (const auto& m : messages)
      list.push_back({{"role", m.role}, {"content", m.content}});
    // `max_tokens` is what OpenAI-compatible servers understand; OpenAI's own reasoning models
    // (o1, o3, ...) want `max_completion_tokens` instead.
    nlohmann::json body{
        {"model", model_}, {"messages", list}, {"max_tokens", guard.max_output_tokens()}};
    if (stream) {
      body["stream"] = true;
      body["stream_options"] = {{"include_usage", true}};
    }
    return body;
  }

  openai_detail::Exchange post(const nlohmann::json& body, const safeguards::LlmCallGuard& guard,
                               const std::function<bool(std::string_view)>* on_data) const {
    std::unique_ptr<CURL, openai_detail::CurlDeleter> handle(curl_easy_init());
    if (!handle)
      throw OpenAiTransportError(CURLE_FAILED_INIT, "curl_easy_init failed");
    CURL* h = handle.get();
    const long timeout = curl_timeout_ms(guard.time_left());

    std::unique_ptr<curl_slist, openai_detail::SlistDeleter> headers;
    auto add_header = [&](const std::string& line) {
      curl_slist* grown = curl_slist_append(headers.get(), line.c_str());
      if (grown == nullptr)
        throw std::bad_alloc();
      (void)headers.release(); // now owned by `grown`
      headers.reset(grown);
    };
    add_header("Content-Type: application/json");
    add_header(on_data ? "Accept: text/event-stream" : "Accept: application/json");
    if (!api_key_.empty())
      add_header("Authorization: Bearer " + api_key_);
    // How long we will wait, in whole seconds, as OpenAI's own SDKs tell the server.
    add_header(fmt::format("X-Stainless-Timeout: {}", timeout / 1000));

    const std::string payload = body.dump();
    const std::string target = url();
    openai_detail::Exchange ex;
    openai_detail::Receiver receiver{.handle = h, .on_data = on_data, .exchange = &ex};
    char error_buffer[CURL_ERROR_SIZE] = {};
    curl_easy_setopt(h, CURLOPT_URL, target.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(payload.size()));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); // time-outs without signals: safe in threads
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &openai_detail::Receiver::write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &receiver);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);

    ex.code = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ex.status);
    long request_size = 0;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &request_size);
    ex.request_sent = request_size > 0;
    ex.curl_error = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(ex.code);
    return ex;
  }

  std::string transport_message(const openai_detail::Exchange& ex) const {
    return fmt::format("{}: {} (libcurl error {})", url(), ex.curl_error,
                       static_cast<int>(ex.code));
  }

  OpenAiApiError api_error(long status, std::string body) const {
    std::string message =
        fmt::format("{}: HTTP {}: {}", url(), status, openai_detail::error_message(body));
    return OpenAiApiError(status, std::move(body), message);
  }

  // For the failures where the provider did the work but nobody knows how much: charges
  // everything set aside and says so, for the exception's message.
  static std::string charge_reserved(safeguards::LlmCallGuard& guard) {
    const safeguards::LlmCallRecord record = guard.commit_reserved();
    return fmt::format("; charged everything set aside: {}, {} USD", record.usage, record.cost);
  }

  std::string base_url_;
  std::string api_key_;
  std::string model_;
};
