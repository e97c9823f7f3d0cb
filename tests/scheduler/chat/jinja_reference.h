// Runs the Jinja2 reference renderer (render_with_jinja2.py) with Debian's
// /usr/bin/python3, which has python3-jinja2 (tools/setup.sh installs it),
// and returns its JSON output.
#ifndef MOESERVE_TESTS_SCHEDULER_CHAT_JINJA_REFERENCE_H_
#define MOESERVE_TESTS_SCHEDULER_CHAT_JINJA_REFERENCE_H_

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moeserve::testing {

inline std::string ChatTestDataPath(const std::string& name) {
  return std::string(MOESERVE_SOURCE_DIR) + "/tests/scheduler/chat/" + name;
}

inline nlohmann::ordered_json ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::ordered_json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
}

// `args` are the script's arguments, each passed single-quoted.
inline absl::StatusOr<nlohmann::ordered_json> RunJinjaReference(
    const std::vector<std::string>& args) {
  std::string command = "/usr/bin/python3 '" + ChatTestDataPath("render_with_jinja2.py") + "'";
  for (const std::string& a : args) command += " '" + a + "'";
  command += " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("cannot run " + command);
  std::string output;
  char buffer[65536];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  if (status != 0) {
    return absl::FailedPreconditionError(
        "the Jinja2 reference failed (is python3-jinja2 installed? run tools/setup.sh): " +
        output.substr(0, 2000));
  }
  nlohmann::ordered_json json = nlohmann::ordered_json::parse(output, nullptr, false);
  if (json.is_discarded()) return absl::InternalError("reference output is not JSON: " + output);
  return json;
}

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_SCHEDULER_CHAT_JINJA_REFERENCE_H_
