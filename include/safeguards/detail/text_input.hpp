// safeguards: helpers shared by the text loaders (price_csv.hpp, price_json.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <safeguards/errors.hpp>
#include <string>
#include <string_view>
#include <system_error>

namespace safeguards {
inline namespace v1 {
namespace detail {

// `text` in double quotes for an error message. Control bytes are escaped, because a newline
// would forge a log line and a NUL would end what() early; long text is cut, because a
// megabyte of garbage does not belong in a message.
inline std::string quoted_excerpt(std::string_view text, std::size_t shown = 100) {
  std::string out = "\"";
  for (char c : text.substr(0, shown)) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f)
      out += fmt::format("\\x{:02x}", byte);
    else if (c == '"' || c == '\\')
      out += fmt::format("\\{}", c);
    else
      out += c;
  }
  out += '"';
  if (text.size() > shown)
    out += fmt::format("... ({} bytes)", text.size());
  return out;
}

// The whole of a file, byte for byte. `what` names the file's role in the message ("price
// file"). Throws `IoError` naming the path when it cannot be opened or read.
inline std::string read_text_file(const std::filesystem::path& path, std::string_view what) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  auto fail = [&](std::string_view doing) {
    // errno is what the C library left behind; the standard streams do not promise to keep
    // it, so a reason is given only when there is one.
    const int error = errno;
    throw IoError(fmt::format("safeguards: cannot {} {} {}{}", doing, what,
                              quoted_excerpt(path.string(), 400),
                              error != 0 ? ": " + std::generic_category().message(error) : ""));
  };
  if (!in)
    fail("open");
  std::string content;
  char buffer[1 << 16];
  // read() turns a failed read (a directory opens on Linux, then EISDIR) into badbit; the
  // end of the file only sets eofbit and failbit.
  do {
    in.read(buffer, sizeof buffer);
    content.append(buffer, static_cast<std::size_t>(in.gcount()));
  } while (in);
  if (in.bad())
    fail("read");
  return content;
}

} // namespace detail
} // namespace v1
} // namespace safeguards
