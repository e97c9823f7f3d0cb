// The Jinja2 interpreter behind chat templates: every construct against
// Jinja2 itself (jinja_cases.json rendered by render_with_jinja2.py), then
// errors, limits and the Python formatting helpers directly.
#include <pthread.h>

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/chat/builtins.h"
#include "scheduler/chat/evaluator.h"
#include "scheduler/chat/parser.h"
#include "scheduler/chat/py_string.h"
#include "tests/scheduler/chat/jinja_reference.h"

namespace moeserve::jinja {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

absl::StatusOr<std::string> RenderJinja(std::string_view source,
                                        const nlohmann::ordered_json& vars = {},
                                        RenderLimits limits = RenderLimits()) {
  absl::StatusOr<std::unique_ptr<TemplateAst>> ast = Compile(source);
  if (!ast.ok()) return ast.status();
  std::vector<std::pair<std::string, Value>> variables;
  if (vars.is_object()) {
    for (const auto& [key, json] : vars.items()) {
      absl::StatusOr<Value> v = Value::FromJson(json);
      if (!v.ok()) return v.status();
      variables.emplace_back(key, *std::move(v));
    }
  }
  Renderer renderer(**ast, limits);
  return renderer.Render(std::move(variables));
}

std::string ErrorOf(const absl::StatusOr<std::string>& r) {
  return r.ok() ? "(rendered: " + *r + ")" : std::string(r.status().message());
}

TEST(JinjaTest, EveryConstructRendersAsJinja2Does) {
  const nlohmann::ordered_json cases =
      testing::ReadJsonFile(testing::ChatTestDataPath("jinja_cases.json"));
  ASSERT_TRUE(cases.is_array());
  absl::StatusOr<nlohmann::ordered_json> reference =
      testing::RunJinjaReference({"--cases", testing::ChatTestDataPath("jinja_cases.json")});
  ASSERT_TRUE(reference.ok()) << reference.status();
  const nlohmann::ordered_json& expected = (*reference)["cases"];
  ASSERT_EQ(expected.size(), cases.size());
  int same_text = 0;
  int both_failed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    SCOPED_TRACE(c["name"].get<std::string>() + ": " + c["template"].get<std::string>());
    const absl::StatusOr<std::string> got =
        RenderJinja(c["template"].get<std::string>(), c.value("vars", nlohmann::ordered_json()));
    const auto& want = expected[i];
    if (want.contains("text")) {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, want["text"].get<std::string>());
      same_text += got.ok() && *got == want["text"].get<std::string>();
      continue;
    }
    EXPECT_FALSE(got.ok()) << "Jinja2 failed with " << want["error"] << " but we rendered "
                           << (got.ok() ? *got : "");
    if (got.ok()) continue;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    if (want["raised"].get<bool>()) {
      EXPECT_TRUE(IsTemplateRaisedError(got.status()));
      EXPECT_EQ(got.status().message(), want["error"].get<std::string>());
    }
    ++both_failed;
  }
  std::printf("jinja constructs: %d identical renderings, %d failing in both, of %zu cases\n",
              same_text, both_failed, cases.size());
}

TEST(JinjaTest, SyntaxErrorsNameTheLine) {
  EXPECT_EQ(ErrorOf(RenderJinja("a\nb\n{% frobnicate %}")), "line 3: unknown tag 'frobnicate'");
  EXPECT_EQ(ErrorOf(RenderJinja("{% if x %}\n\nno end")),
            "line 3: unexpected end of template; expected 'elif' or 'else' or 'endif'");
  EXPECT_EQ(ErrorOf(RenderJinja("x\n{{ 1 + }}")), "line 2: unexpected end of print statement");
  EXPECT_EQ(ErrorOf(RenderJinja("\n\n{{ 'abc }}")), "line 3: unterminated string literal");
  EXPECT_EQ(ErrorOf(RenderJinja("\n{# open")), "line 2: missing end of comment tag");
  EXPECT_EQ(ErrorOf(RenderJinja("{% endfor %}")),
            "line 1: unexpected 'endfor' (no open block it could close)");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ (1 ]}}")), "line 1: unexpected ']', expected ')'");
  EXPECT_EQ(ErrorOf(RenderJinja("\n{% continue %}")), "line 2: 'continue' outside of a loop");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ x § y }}")), "line 1: unexpected character '§' in tag");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ 99999999999999999999 }}")),
            "line 1: integer literal 99999999999999999999 does not fit in 64 bits");
}

TEST(JinjaTest, UnsupportedConstructsAreNamedNotGuessed) {
  EXPECT_EQ(ErrorOf(RenderJinja("\n{% include 'other.jinja' %}")),
            "line 2: {% include %} is not supported in chat templates");
  EXPECT_EQ(ErrorOf(RenderJinja("{% extends 'base' %}")),
            "line 1: {% extends %} is not supported in chat templates");
  EXPECT_EQ(ErrorOf(RenderJinja("{% call f() %}x{% endcall %}")),
            "line 1: {% call %} is not supported in chat templates");
  EXPECT_EQ(ErrorOf(RenderJinja("{% for x in y recursive %}{% endfor %}")),
            "line 1: recursive for loops are not supported");
  // Unknown filters and tests fail when the template is compiled, wherever they are.
  EXPECT_EQ(ErrorOf(RenderJinja("{% if false %}\n{{ x | urlencode }}{% endif %}")),
            "line 2: no filter named 'urlencode'");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ x is frobbed }}")), "line 1: no test named 'frobbed'");
  EXPECT_EQ(ErrorOf(RenderJinja("\n\n{{ 'a'.zfill(3) }}")),
            "line 3: str.zfill() is not supported by the chat template engine");
  EXPECT_THAT(ErrorOf(RenderJinja("{{ '%s' % 'x' }}")),
              HasSubstr("printf-style string formatting ('...' % values) is not supported"));
  EXPECT_THAT(ErrorOf(RenderJinja("{{ '{:>5}'.format(1) }}")),
              HasSubstr("str.format field '{:>5}' is not supported"));
  EXPECT_THAT(ErrorOf(RenderJinja("{{ cycler(1, 2) }}")), HasSubstr("cycler() is not supported"));
  EXPECT_THAT(ErrorOf(RenderJinja("{{ 'abc'.startswith('a', 1) }}")),
              HasSubstr("str.startswith() with start/end is not supported"));
  EXPECT_THAT(ErrorOf(RenderJinja("{{ {1: 'a'} }}")),
              HasSubstr("dict keys must be strings in chat templates, got int"));
}

TEST(JinjaTest, RuntimeErrorsNameTheLineAndTheProblem) {
  EXPECT_EQ(ErrorOf(RenderJinja("ok\n{{ messages[0].content + 1 }}",
                                {{"messages", {{{"content", "hi"}}}}})),
            "line 2: can only concatenate str (not \"int\") to str");
  EXPECT_EQ(ErrorOf(RenderJinja("\n\n{{ m.content.strip() }}", {{"m", {{"role", "user"}}}})),
            "line 3: 'dict object' has no attribute 'content'");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ missing.attr }}")), "line 1: 'missing' is undefined");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ missing + 1 }}")), "line 1: 'missing' is undefined");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ 1 < 'a' }}")),
            "line 1: '<' not supported between instances of 'int' and 'str'");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ l.append(1) }}", {{"l", nlohmann::ordered_json::array()}})),
            "line 1: access to attribute 'append' of 'list' object is unsafe.");
  EXPECT_EQ(ErrorOf(RenderJinja("{{ 9223372036854775807 + 1 }}")),
            "line 1: integer overflow (beyond 64 bits)");
}

TEST(JinjaTest, UndefinedValuesBehaveAsJinjasDefaultUndefined) {
  EXPECT_EQ(*RenderJinja("[{{ x }}][{{ d.nope }}][{{ l[9] }}]",
                         {{"d", nlohmann::ordered_json::object()}, {"l", {1}}}),
            "[][][]");
  EXPECT_EQ(*RenderJinja("{{ x is defined }} {{ x | default('d') }} {{ x | length }} "
                         "{% for i in x %}never{% endfor %}{{ 'a' in x }}"),
            "False d 0 False");
}

TEST(JinjaTest, RaiseExceptionCarriesTheTemplatesMessage) {
  const absl::StatusOr<std::string> r = RenderJinja(
      "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user "
      "message') }}{% endif %}",
      {{"messages", {{{"role", "assistant"}}}}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "Conversation must start with a user message");
  EXPECT_TRUE(IsTemplateRaisedError(r.status()));
  EXPECT_FALSE(IsTemplateRaisedError(RenderJinja("{{ 1 / 0 }}").status()));
}

TEST(JinjaTest, DeepNestingFailsCleanly) {
  const int n = 10000;
  EXPECT_THAT(ErrorOf(RenderJinja("{{ " + std::string(n, '(') + "1" + std::string(n, ')') + " }}")),
              HasSubstr("nested more than"));
  EXPECT_THAT(ErrorOf(RenderJinja("{{ " + std::string(n, '[') + std::string(n, ']') + " }}")),
              HasSubstr("nested more than"));
  std::string ifs;
  for (int i = 0; i < n; ++i) ifs += "{% if true %}";
  for (int i = 0; i < n; ++i) ifs += "{% endif %}";
  EXPECT_THAT(ErrorOf(RenderJinja(ifs)), HasSubstr("blocks nested more than"));
  std::string sum = "{{ 1";
  for (int i = 0; i < n; ++i) sum += " + 1";
  EXPECT_THAT(ErrorOf(RenderJinja(sum + " }}")), HasSubstr("expression nested more than"));
  std::string nots = "{{ ";
  for (int i = 0; i < n; ++i) nots += "not ";
  EXPECT_THAT(ErrorOf(RenderJinja(nots + "1 }}")), HasSubstr("nested more than"));
  std::string filters = "{{ 'x'";
  for (int i = 0; i < n; ++i) filters += " | upper";
  EXPECT_THAT(ErrorOf(RenderJinja(filters + " }}")), HasSubstr("nested more than"));
  // Data nested too deep is refused where it enters.
  nlohmann::ordered_json deep = 1;
  for (int i = 0; i < 2 * kMaxValueDepth; ++i) deep = nlohmann::ordered_json::array({deep});
  EXPECT_THAT(Value::FromJson(deep).status().message(), HasSubstr("nested deeper than"));
}

TEST(JinjaTest, RealisticNestingRenders) {
  std::string ifs;
  for (int i = 0; i < 40; ++i) ifs += "{% if true %}";
  ifs += "deep";
  for (int i = 0; i < 40; ++i) ifs += "{% endif %}";
  EXPECT_EQ(*RenderJinja(ifs), "deep");
  std::string sum = "{{ 0";
  for (int i = 0; i < 100; ++i) sum += " + 1";
  EXPECT_EQ(*RenderJinja(sum + " }}"), "100");
}

TEST(JinjaTest, LongTemplatesAndLoopsRender) {
  std::string source;
  std::string expected;
  for (int i = 0; i < 20000; ++i) {
    source += "{% set x = " + std::to_string(i) + " %}{{ x }},";
    expected += std::to_string(i) + ",";
  }
  EXPECT_EQ(*RenderJinja(source), expected);
  const absl::StatusOr<std::string> big = RenderJinja(
      "{% set ns = namespace(n=0) %}{% for i in range(100000) %}{% set ns.n = ns.n + i %}"
      "{% endfor %}{{ ns.n }}");
  EXPECT_EQ(*big, "4999950000");
}

TEST(JinjaTest, RunawayRecursionAndOutputAreBounded) {
  EXPECT_THAT(ErrorOf(RenderJinja("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")),
              HasSubstr("template evaluation nested deeper than 500 levels"));
  RenderLimits small;
  small.max_output_bytes = 1000;
  EXPECT_THAT(ErrorOf(RenderJinja("{% for i in range(2000) %}x{% endfor %}", {}, small)),
              HasSubstr("rendered text longer than the limit of 1000 bytes"));
  EXPECT_THAT(ErrorOf(RenderJinja("{{ 'x' * 2000 }}", {}, small)),
              HasSubstr("longer than the limit of 1000 bytes"));
  EXPECT_THAT(ErrorOf(RenderJinja("{{ range(1000000) }}")), HasSubstr("Range too big"));
}

// Namespaces are mutable, so templates can build reference cycles; the
// renderer breaks them when it ends (the sanitizer build's leak check
// watches this test).
TEST(JinjaTest, ReferenceCyclesThroughNamespacesAreBroken) {
  EXPECT_EQ(*RenderJinja("{% set ns = namespace(n=1) %}{% set ns.me = ns %}{{ ns.me.me.n }}"), "1");
  EXPECT_EQ(*RenderJinja("{% for i in [1] %}{% set ns = namespace() %}{% macro f() %}{{ i }}"
                         "{% endmacro %}{% set ns.f = f %}{{ ns.f() }}{% endfor %}"),
            "1");
}

// gRPC and thread-pool threads may have small stacks: the deepest render the
// limits allow must fit in 1 MiB (it needs less than 512 KiB in an optimized
// build; unoptimized and sanitizer frames are several times larger).
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kSmallStackBytes = size_t{8} << 20;
#elif !defined(__OPTIMIZE__)
constexpr size_t kSmallStackBytes = size_t{4} << 20;
#else
constexpr size_t kSmallStackBytes = size_t{1} << 20;
#endif

TEST(JinjaTest, DeepestAllowedRenderFitsASmallStack) {
  struct Job {
    absl::StatusOr<std::string> result;
  } job;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kSmallStackBytes);
  pthread_t thread;
  auto run = [](void* arg) -> void* {
    // Each recursion level goes through a loop, a condition, a filter, a
    // concatenation and a call: the heaviest frames there are.
    static_cast<Job*>(arg)->result = RenderJinja(
        "{% macro f(n) %}{% for i in [1] %}{% if n > 0 %}{{ (f(n - 1) ~ '') | trim }}{% endif %}"
        "{% endfor %}{% endmacro %}{{ f(1000) }}");
    return nullptr;
  };
  ASSERT_EQ(pthread_create(&thread, &attr, run, &job), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_THAT(ErrorOf(job.result), HasSubstr("nested deeper than 500 levels"));
}

TEST(PyStringTest, FloatReprMatchesPython) {
  const std::pair<double, const char*> cases[] = {{1.0, "1.0"},
                                                  {0.1, "0.1"},
                                                  {-0.0, "-0.0"},
                                                  {1e16, "1e+16"},
                                                  {1e15, "1000000000000000.0"},
                                                  {1e-5, "1e-05"},
                                                  {0.0001, "0.0001"},
                                                  {123.456, "123.456"},
                                                  {1.5e300, "1.5e+300"},
                                                  {2.5e-10, "2.5e-10"},
                                                  {1.0 / 3, "0.3333333333333333"}};
  for (const auto& [v, want] : cases) EXPECT_EQ(PyFloatRepr(v), want) << v;
}

TEST(PyStringTest, WhitespaceIsPythonsUnicodeWhitespace) {
  EXPECT_EQ(PyStrip("\u3000\u00a0 x\u2028\u0085", std::nullopt, true, true), "x");
  EXPECT_EQ(PySplit("a\u2003b", std::nullopt, -1), (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(IsPyWhitespace(0x200B));  // zero-width space is not whitespace
}

}  // namespace
}  // namespace moeserve::jinja
