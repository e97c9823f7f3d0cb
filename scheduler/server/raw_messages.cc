#include "scheduler/server/raw_messages.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"
#include "scheduler/tokenizer/utf8.h"

namespace moeserve {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

constexpr int kMaxDepth = 16;  // nesting followed when looking for the bad field

// The first string field of `fields` (read as a `descriptor` message, nested
// messages included) that is not UTF-8: "<path>: <what is wrong>".
std::optional<std::string> FindInvalidUtf8(const UnknownFieldSet& fields,
                                           const Descriptor& descriptor, const std::string& prefix,
                                           int depth) {
  std::map<int, int> seen;  // field number -> occurrences so far (repeated fields' index)
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& f = fields.field(i);
    if (f.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const FieldDescriptor* field = descriptor.FindFieldByNumber(f.number());
    if (field == nullptr) continue;
    std::string path = absl::StrCat(prefix, field->name());
    const int index = seen[f.number()]++;
    if (field->is_repeated() && !field->is_map()) absl::StrAppend(&path, "[", index, "]");
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      absl::Status utf8 = ValidateUtf8(f.length_delimited());
      // "text is not valid UTF-8: ..." -> "<path> is not valid UTF-8: ..."
      if (!utf8.ok()) {
        std::string what(utf8.message());
        if (what.rfind("text ", 0) == 0) what.erase(0, 5);
        return absl::StrCat(path, " ", what);
      }
    } else if (field->type() == FieldDescriptor::TYPE_MESSAGE && depth < kMaxDepth) {
      UnknownFieldSet nested;
      if (nested.ParseFromString(f.length_delimited())) {
        if (auto bad = FindInvalidUtf8(nested, *field->message_type(), path + ".", depth + 1)) {
          return bad;
        }
      }
    }
  }
  return std::nullopt;
}

}  // namespace

absl::Status ParseRawRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  std::string data;
  if (bytes.Valid() && bytes.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      data.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  // Strings are checked first, so that protobuf never meets a bad one: it
  // would log an error per request, which a client could use to flood the log.
  UnknownFieldSet fields;
  if (fields.ParseFromString(data)) {
    if (auto bad = FindInvalidUtf8(fields, *message->GetDescriptor(), "", 0)) {
      return absl::InvalidArgumentError(*bad);
    }
    if (message->ParseFromString(data)) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ",
                                                 message->GetDescriptor()->full_name(), " (",
                                                 data.size(), " bytes of malformed protobuf)"));
}

grpc::ByteBuffer SerializeRawResponse(const google::protobuf::Message& message) {
  const std::string data = message.SerializeAsString();
  grpc::Slice slice(data);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace moeserve
