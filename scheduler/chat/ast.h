// The parsed form of a template: expressions and statements as Jinja2's
// parser builds them (jinja2/nodes.py), in two plain node types whose fields
// are read according to `kind`. The tree is immutable once parsed, so one
// tree serves concurrent renders.
#ifndef MOESERVE_SCHEDULER_CHAT_AST_H_
#define MOESERVE_SCHEDULER_CHAT_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/chat/value.h"

namespace moeserve::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using StmtList = std::vector<StmtPtr>;

// Arguments as written at a call, filter or test: f(a, b, key=c, *xs, **kw).
struct ArgList {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
  ExprPtr star_args;    // *xs, or null
  ExprPtr star_kwargs;  // **kw, or null
};

enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kNsRef,     // `ns.attr` as an assignment target: name, attr
    kGetAttr,   // operands[0].attr
    kGetItem,   // operands[0][operands[1]]
    kSlice,     // [operands[0]:operands[1]:operands[2]], each may be null
    kCall,      // operands[0](args)
    kFilter,    // operands[0] | name(args); operands[0] is null in a filter block
    kTest,      // operands[0] is [not] name(args); negated
    kNeg,       // -operands[0]
    kPos,       // +operands[0]
    kNot,       // not operands[0]
    kBinary,    // operands[0] op operands[1], op one of + - * / // % ** and or
    kCompare,   // operands[0] compare_ops[0] operands[1] compare_ops[1] operands[2] ...
    kConcat,    // operands joined with ~
    kCondExpr,  // operands[0] if operands[1] else operands[2] (null: no else)
    kList,      // [operands...]
    kTuple,     // (operands...)
    kDict,      // {operands[0]: operands[1], operands[2]: operands[3], ...}
  };

  Kind kind;
  int line = 0;
  int depth = 1;  // height of the subtree, bounded by the parser
  Value literal;
  std::string name;  // kName, kNsRef, kFilter, kTest; the attribute of kGetAttr
  std::string attr;  // kNsRef
  std::string op;    // kBinary
  bool negated = false;
  std::vector<ExprPtr> operands;
  std::vector<CompareOp> compare_ops;
  ArgList args;  // kCall, kFilter, kTest
};

struct Stmt {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ exprs[0] }}, or {% print exprs... %}
    kIf,           // if exprs[i]: bodies[i] ...; bodies[exprs.size()] is the else body
    kFor,          // for target in exprs[0] [if exprs[1]]: bodies[0] else bodies[1]
    kSet,          // set target = exprs[0]
    kSetBlock,     // set target [| filter] %} bodies[0] {% endset
    kMacro,        // macro name(params = defaults): bodies[0]
    kFilterBlock,  // filter <filter> %} bodies[0] {% endfilter
    kWith,         // with targets[i] = exprs[i]: bodies[0]
    kBreak,
    kContinue,
    kGeneration,  // transformers' {% generation %}: renders bodies[0]
  };

  Kind kind;
  int line = 0;
  std::string text;
  std::vector<ExprPtr> exprs;
  ExprPtr target;
  std::vector<ExprPtr> targets;
  ExprPtr filter;  // kSetBlock, kFilterBlock: a kFilter chain whose innermost input is null
  std::vector<StmtList> bodies;
  // kMacro: name, parameter names and their defaults (null: none).
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;
  bool catches_varargs = false;  // the body reads `varargs`: extra positional arguments go there
  bool catches_kwargs = false;   // the body reads `kwargs`: unknown keywords go there
};

// A parsed template: the top-level statements.
struct TemplateAst {
  StmtList body;
};

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_AST_H_
