// A redis-server of a test's own: started on 127.0.0.1 on a free port, in a temporary directory
// that holds its configuration, log and append-only file, and stopped when the test ends. Tests
// of the Redis ledger run against it, never against a mock: the scripts, the server's atomicity
// and its failures are what they test.
// SPDX-License-Identifier: MIT
#pragma once

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <safeguards/redis_options.hpp>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace safeguards::test {

struct RedisServerOptions {
  bool append_only = false;       // AOF with `appendfsync always`: no acknowledged write lost
  std::string requirepass;        // the default user's password
  std::vector<std::string> users; // ACL lines, e.g. "user alice on >pw ~app:* +@all"
};

class RedisServer {
public:
  using Options = RedisServerOptions;

  RedisServer() : RedisServer(Options()) {}
  explicit RedisServer(Options options) : options_(std::move(options)) {
    char pattern[] = "/tmp/safeguards-redis-XXXXXX";
    if (!::mkdtemp(pattern))
      throw std::runtime_error("redis test server: mkdtemp failed");
    dir_ = pattern;
    for (int attempt = 0;; ++attempt) {
      port_ = free_port();
      write_config();
      if (start_and_wait())
        break;
      if (attempt == 4)
        throw std::runtime_error("redis test server did not start; log: " + log());
    }
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  int port() const noexcept { return port_; }
  const std::string& dir() const noexcept { return dir_; }
  bool running() const noexcept { return pid_ > 0; }

  /// Shuts the server down cleanly (SIGTERM) and waits for it.
  void stop() { signal_and_reap(SIGTERM); }
  /// Kills it (SIGKILL): what a crash looks like to clients and to its files.
  void kill() { signal_and_reap(SIGKILL); }
  /// Starts it again on the same port and directory (its append-only file, if any, is replayed).
  void restart() {
    stop();
    if (!start_and_wait())
      throw std::runtime_error("redis test server did not restart; log: " + log());
  }

  /// Runs one command on a connection of its own; its reply as text (an integer as digits,
  /// nil as ""), or throws when the server does not answer.
  std::string command(const std::vector<std::string>& argv) const {
    redisContext* c = redisConnect("127.0.0.1", port_);
    if (!c || c->err) {
      if (c)
        redisFree(c);
      throw std::runtime_error("redis test server: cannot connect");
    }
    std::vector<const char*> parts;
    std::vector<std::size_t> lengths;
    for (const auto& a : argv) {
      parts.push_back(a.c_str());
      lengths.push_back(a.size());
    }
    if (!options_.requirepass.empty())
      freeReplyObject(redisCommand(c, "AUTH %s", options_.requirepass.c_str()));
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(parts.size()), parts.data(), lengths.data()));
    std::string text;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
      text = std::to_string(reply->integer);
    else if (reply && reply->str)
      text.assign(reply->str, reply->len);
    const bool answered = reply != nullptr;
    if (reply)
      freeReplyObject(reply);
    redisFree(c);
    if (!answered)
      throw std::runtime_error("redis test server: no reply");
    return text;
  }

  /// Options that reach this server, keys under `prefix`. A killed server refuses connections
  /// at once: the timeout only bounds a hung one, and is generous so that a loaded machine (CI
  /// under a sanitizer) is not mistaken for a dead server.
  RedisOptions options(std::string prefix = "t") const {
    RedisOptions o;
    o.port = port_;
    o.key_prefix = std::move(prefix);
    o.timeout = std::chrono::seconds(5);
    return o;
  }

  /// One field of a hash ("" when there is none).
  std::string hget(const std::string& key, const std::string& field) const {
    return command({"HGET", key, field});
  }

  std::string log() const {
    std::ifstream in(dir_ + "/redis.log");
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

private:
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      if (fd >= 0)
        ::close(fd);
      throw std::runtime_error("redis test server: no free port");
    }
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  void write_config() const {
    std::ofstream conf(dir_ + "/redis.conf");
    conf << "port " << port_ << "\nbind 127.0.0.1\ndir " << dir_ << "\nlogfile " << dir_
         << "/redis.log\ndaemonize no\nsave \"\"\n";
    if (options_.append_only)
      conf << "appendonly yes\nappendfsync always\n";
    if (!options_.requirepass.empty())
      conf << "requirepass " << options_.requirepass << "\n";
    for (const auto& user : options_.users)
      conf << user << "\n";
  }

  static std::string server_binary() {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): nothing in the tests sets the environment
    if (const char* path = std::getenv("SAFEGUARDS_REDIS_SERVER"); path && *path)
      return path;
#ifdef SAFEGUARDS_REDIS_SERVER
    return SAFEGUARDS_REDIS_SERVER;
#else
    return "redis-server";
#endif
  }

  // Starts the server and waits until it answers (a NOAUTH error is an answer too).
  bool start_and_wait() {
    const std::string binary = server_binary();
    const std::string conf = dir_ + "/redis.conf";
    const pid_t pid = ::fork();
    if (pid < 0)
      throw std::runtime_error("redis test server: fork failed");
    if (pid == 0) {
      ::execlp(binary.c_str(), binary.c_str(), conf.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    pid_ = pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) { // exited: the port was taken, say
        pid_ = -1;
        return false;
      }
      if (answers())
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    signal_and_reap(SIGKILL);
    return false;
  }

  bool answers() const {
    redisContext* c = redisConnect("127.0.0.1", port_);
    bool ok = false;
    if (c && !c->err) {
      auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
      // Any answer but LOADING (an append-only file still being read): NOAUTH is an answer.
      ok = reply != nullptr &&
           !(reply->type == REDIS_REPLY_ERROR && std::string(reply->str).rfind("LOADING", 0) == 0);
      if (reply)
        freeReplyObject(reply);
    }
    if (c)
      redisFree(c);
    return ok;
  }

  void signal_and_reap(int signal) {
    if (pid_ <= 0)
      return;
    ::kill(pid_, signal);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  Options options_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

/// Polls `done` until it holds or `limit` passes: for what a real server does in its own time (a
/// lease running out, a pause ending), never to let time pass for the code under test.
template <class F>
bool eventually(F done, std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

} // namespace safeguards::test
