// Requests and responses of the raw (ByteBuffer) gRPC methods.
//
// Why raw: protobuf refuses to parse a proto3 string field that is not UTF-8,
// and gRPC's generated handlers then fail the call with UNIMPLEMENTED and no
// message before any of our code runs. Generate, Chat and Tokenize take text,
// so they are registered raw and parse here, where a bad string becomes
// INVALID_ARGUMENT naming the field ("text is not valid UTF-8: ... at byte
// offset 3").
#ifndef MOESERVE_SCHEDULER_SERVER_RAW_MESSAGES_H_
#define MOESERVE_SCHEDULER_SERVER_RAW_MESSAGES_H_

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace moeserve {

// Parses `bytes` into `message`. InvalidArgument naming the field (with its
// index when repeated, e.g. "stopping.stop[1]" or "messages[0].content") when
// a string field is not UTF-8, or saying the bytes are not a `message` at all.
absl::Status ParseRawRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message);

// `message` serialized for a raw method's response.
grpc::ByteBuffer SerializeRawResponse(const google::protobuf::Message& message);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_RAW_MESSAGES_H_
