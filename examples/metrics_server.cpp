// A Prometheus endpoint for a coordinator: every pool's and agent's numbers and each agent's
// service level on http://127.0.0.1:<port>/metrics, served with cpp-httplib.
//
//   metrics_server [--port N]   serve until stopped (default port 9464), spending a little each
//                               second so the graphs move; scrape it with
//                               `scrape_configs: [{job_name: safeguards,
//                                 static_configs: [{targets: ["127.0.0.1:9464"]}]}]`
//   metrics_server --once       serve on a free port, fetch /metrics once with an HTTP client,
//                               print what came back and exit (what CTest runs)
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <httplib.h>
#include <mutex>
#include <safeguards/coordinator.hpp>
#include <safeguards/degradation.hpp>
#include <safeguards/prometheus.hpp>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>

using namespace safeguards;
using namespace std::chrono_literals;

// expect: ^GET /metrics: 200, text/plain; version=0\.0\.4; charset=utf-8$
// expect: ^# TYPE safeguards_agent_used_budget gauge$
// expect: ^safeguards_pool_unallocated_budget\{pool="research",priority="8"\} 350\.0$
// expect: ^safeguards_agent_used_budget\{agent="summarizer",pool="research",priority="9"\} 12\.5$
// expect: ^safeguards_agent_reserved_budget\{agent="summarizer",[^}]*\} 4\.75$
// expect: ^safeguards_agent_consumes_total\{agent="crawler",pool="research",priority="4"\} 3$
// expect: ^safeguards_agent_overspent_total\{agent="tagger",pool="batch",priority="5"\} 1\.5$
// expect: ^safeguards_agent_service_level\{agent="summarizer",[^}]*,level="full"\} 1$
// expect: ^safeguards_agent_service_level\{agent="crawler",[^}]*,level="standard"\} 1$
// expect: ^safeguards_agent_service_level\{agent="tagger",[^}]*,level="emergency"\} 1$

namespace {

int usage(const char* program) {
  fmt::print(stderr, "usage: {} [--port N | --once]\n", program);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  bool once = false;
  int port = 9464;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--once") {
      once = true;
    } else if (arg == "--port" && i + 1 < argc) {
      char* end = nullptr;
      long value = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || value < 1 || value > 65535)
        return usage(argv[0]);
      port = static_cast<int>(value);
    } else {
      return usage(argv[0]);
    }
  }

  BudgetCoordinator coord;
  PoolId research = coord.create_pool({.name = "research", .initial_budget = 500_d, .priority = 8});
  PoolId batch = coord.create_pool({.name = "batch", .initial_budget = 20_d, .priority = 3});
  AgentId summarizer = coord.create_agent(
      {.name = "summarizer", .initial_budget = 100_d, .priority = 9, .pool = research});
  AgentId crawler = coord.create_agent(
      {.name = "crawler", .initial_budget = 50_d, .priority = 4, .pool = research});
  AgentId tagger = coord.create_agent({.name = "tagger", .initial_budget = 10_d, .pool = batch});
  GracefulDegradation degradation(coord); // the guide's levels: full, standard, minimal, emergency

  coord.consume(summarizer, Decimal("12.5"));
  for (int i = 0; i < 3; ++i)
    coord.consume(crawler, 10_d); // 40 % left: standard
  auto in_flight = coord.reserve(summarizer, Decimal("4.75"));
  {
    auto call = coord.reserve(tagger, 8_d);
    (void)call.commit(Decimal("11.5")); // 1.5 more than tagger had: recorded as overspent
  }

  httplib::Server server;
  server.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(to_prometheus(coord, degradation), std::string(prometheus_content_type));
  });

  if (once) {
    int bound = server.bind_to_any_port("127.0.0.1");
    if (bound <= 0) {
      fmt::print(stderr, "cannot listen on 127.0.0.1\n");
      return 1;
    }
    // The socket listens already: the request waits in the backlog until the loop accepts it.
    std::thread serving([&] { server.listen_after_bind(); });
    httplib::Client client("127.0.0.1", bound);
    auto res = client.Get("/metrics");
    server.stop();
    serving.join();
    if (!res) {
      fmt::print(stderr, "GET /metrics failed: {}\n", httplib::to_string(res.error()));
      return 1;
    }
    fmt::print("GET /metrics: {}, {}\n", res->status, res->get_header_value("Content-Type"));
    fmt::print("{}", res->body);
    return res->status == 200 ? 0 : 1;
  }

  // Some spending while it serves, so that a scrape every few seconds sees the numbers move.
  std::jthread spender([&](std::stop_token stop) {
    std::mutex mutex;
    std::condition_variable_any wake;
    std::unique_lock lock(mutex);
    while (!wake.wait_for(lock, stop, 1s, [&] { return stop.stop_requested(); }))
      (void)coord.try_consume(crawler, Decimal("0.05"));
  });
  fmt::print("serving http://127.0.0.1:{}/metrics (Ctrl-C to stop)\n", port);
  std::fflush(stdout);
  if (!server.listen("127.0.0.1", port)) {
    fmt::print(stderr, "cannot listen on 127.0.0.1:{}\n", port);
    return 1;
  }
}
