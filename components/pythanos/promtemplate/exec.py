"""Executor of parsed templates with Go's ``text/template`` semantics, and Go's builtin functions.

A tree-walking interpreter over :mod:`.parse`'s nodes. What it reproduces because alert
annotations show it: pipelines feeding the previous value as the last argument, variables scoped
to their ``end``, Go's truth (zero values are false; structs always true), comparisons that refuse
mixed kinds (``eq 1 1.0`` is an error), ``and``/``or`` returning an operand and short-circuiting,
argument type checks against each function's Go signature, and execution errors in Go's words:
``template: NAME:LINE:COL: executing "NAME" at <NODE>: MESSAGE``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence
from urllib.parse import quote_plus

from . import parse as P
from . import values as V
from .printf import GoErr, format_float, sprint, sprintf, sprintln, utf8

MISSING = object()  # no value from a previous pipeline command
MAX_EXEC_DEPTH = 100000

RV = "reflect.Value"
ANY = "interface {}"


class ExecError(Exception):
    """An execution error; ``str()`` is Go's text."""


class FuncError(Exception):
    """A function's own error (Go's second return value, or a recovered panic)."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _TooDeep(Exception):
    """Template calls nested beyond Python's stack; ``frames`` are the innermost calls (node, calling
    template, its depth), innermost first."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[P.Node, str, int]] = []

    def at_go_limit(self) -> tuple[P.Node, str]:
        """The call Go refuses (its caller at depth 100000): the recursion repeats with some period,
        so the frame whose depth has the same residue stands for it."""
        f = self.frames
        period = next((n for n in range(1, len(f) // 2 + 1)
                       if all(f[i][0] is f[i + n][0] for i in range(len(f) - n))), 1)
        for node, name, depth in f[:period]:
            if (MAX_EXEC_DEPTH - depth) % period == 0:
                return node, name
        return f[0][0], f[0][1]


class Func:
    """A template function: its Go parameter types (``variadic`` is the element type of a final
    ``...T``) and an implementation taking the checked arguments."""
    __slots__ = ("name", "params", "variadic", "impl")

    def __init__(self, name: str, params: Sequence[str], impl: Callable[..., Any],
                 variadic: Optional[str] = None) -> None:
        self.name, self.params, self.impl, self.variadic = name, tuple(params), impl, variadic


# ------------------------------------------------------------------------------------ helpers

def indirect(v: Any) -> tuple[Any, bool]:
    """Through pointers and interfaces to the value; (value, True) on a nil one."""
    while True:
        if isinstance(v, V.Iface):
            if v.v is None:
                return v, True
            v = v.v
        elif isinstance(v, V.Ptr):
            if v.target is None:
                return v, True
            v = v.target
        else:
            return v, False


def can_be_nil(typ: Optional[str]) -> bool:
    if typ is None:
        return True
    return typ in (ANY, RV, V.QUERY_RESULT) or typ.startswith(("*", "map[", "[]", "func"))


def zero_of(typ: str) -> Any:
    if typ in (ANY, RV):
        return None
    if typ.startswith("*"):
        return V.Ptr(None, typ)
    if typ == V.QUERY_RESULT or typ.startswith("[]"):
        return V.GoSlice([], typ)
    if typ.startswith("map["):
        return V.GoMap({}, typ, typ.endswith("interface {}"))
    return None


def N(node: P.Node) -> V.Stringer:
    """A parse node as an error operand (its ``String()``)."""
    return V.Stringer(str(node), "*parse." + type(node).__name__)


def T(typ: Optional[str]) -> Any:
    """A ``reflect.Type`` as an error operand (its ``String()``); no type is a nil interface."""
    return None if typ is None else V.Stringer(typ, "*reflect.rtype")


def truth(v: Any) -> bool:
    return V.is_true(v)[0]


# ------------------------------------------------------------------------------------ builtins

def _index_arg(index: Any, cap: int) -> int:
    index = V.deiface(index)
    k = V.kind(index)
    if k in (V.INT, V.UINT):
        x = int(index)
    elif k == V.INVALID:
        raise FuncError("cannot index slice/array with nil")
    else:
        raise FuncError(f"cannot index slice/array with type {V.type_name(index)}")
    if x < 0 or x > cap:
        raise FuncError(f"index out of range: {x}")
    return x


def _prepare_map_key(index: Any) -> str:
    if index is None:
        raise FuncError("value is nil; should be of type string")
    if type(index) is not str:
        raise FuncError(f"value has type {V.type_name(index)}; should be string")
    return index


def b_index(item: Any, *indexes: Any) -> Any:
    item = V.deiface(item)
    if item is None:
        raise FuncError("index of untyped nil")
    for index in indexes:
        index = V.deiface(index)
        item, isnil = indirect(item)
        if isnil:
            raise FuncError("index of nil pointer")
        k = V.kind(item)
        if k == V.STRING:
            b = utf8(item)
            x = _index_arg(index, len(b))
            if x >= len(b):
                raise FuncError("reflect: string index out of range")
            item = V.Uint(b[x])
        elif k == V.SLICE:
            x = _index_arg(index, len(item.items))
            if x >= len(item.items):
                raise FuncError("reflect: slice index out of range")
            item = item.items[x]
        elif k == V.MAP:
            item = item.get(_prepare_map_key(index))
        else:
            raise FuncError(f"can't index item of type {V.elem_type_name(item)}")
    return item


def b_slice(item: Any, *indexes: Any) -> Any:
    item = V.deiface(item)
    if item is None:
        raise FuncError("slice of untyped nil")
    item, isnil = indirect(item)
    if isnil:
        raise FuncError("slice of nil pointer")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    k = V.kind(item)
    if k == V.STRING:
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        seq: Any = utf8(item)
    elif k == V.SLICE:
        seq = item.items
    else:
        raise FuncError(f"can't slice item of type {V.elem_type_name(item)}")
    cap = len(seq)
    idx = [0, len(seq), 0]
    for i, index in enumerate(indexes):
        idx[i] = _index_arg(index, cap)
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    part = seq[idx[0]:idx[1]]
    if k == V.STRING:
        s = part.decode("utf-8", "surrogateescape")
        return V.HTML(s) if isinstance(item, V.HTML) else s
    return V.GoSlice(list(part), item.typ)


def b_len(item: Any) -> int:
    item, isnil = indirect(item)
    if isnil:
        raise FuncError("len of nil pointer")
    k = V.kind(item)
    if k == V.STRING:
        return len(utf8(item))
    if k == V.MAP:
        return len(item.d)
    if k == V.SLICE:
        return len(item.items)
    if item is None:
        raise FuncError("reflect: call of reflect.Value.Type on zero Value")
    raise FuncError(f"len of type {V.elem_type_name(item)}")


def b_not(arg: Any) -> bool:
    return not truth(arg)


_BOOL, _COMPLEX, _INT, _FLOAT, _STRING, _UINT = "bool", "complex", "int", "float", "string", "uint"


def _basic_kind(v: Any) -> Optional[str]:
    k = V.kind(v)
    return {V.BOOL: _BOOL, V.INT: _INT, V.UINT: _UINT, V.FLOAT: _FLOAT, V.COMPLEX: _COMPLEX,
            V.STRING: _STRING}.get(k)


def _comparable(v: Any) -> bool:
    if isinstance(v, (V.GoMap, V.GoSlice)):
        return False
    if isinstance(v, V.GoStruct):
        return all(_comparable(V.deiface(f)) for f in v.fields.values())
    return True


def _is_nil(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, V.Ptr):
        return v.target is None
    if isinstance(v, V.Iface):
        return v.v is None
    return False


def b_eq(arg1: Any, *arg2: Any) -> bool:
    arg1 = V.deiface(arg1)
    if not arg2:
        raise FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in arg2:
        arg = V.deiface(arg)
        k2 = _basic_kind(arg)
        t = False
        if k1 != k2:
            if k1 == _INT and k2 == _UINT or k1 == _UINT and k2 == _INT:
                t = int(arg1) == int(arg)
            elif arg1 is not None and arg is not None:
                raise FuncError(f"incompatible types for comparison: {V.type_name(arg1)} and {V.type_name(arg)}")
        elif k1 is not None:
            t = arg1 == arg if k1 != _STRING else str(arg1) == str(arg)
        else:
            if not (V.kind(arg1) == V.kind(arg) or arg1 is None or arg is None):
                raise FuncError("non-comparable types " + sprintf("%s", [arg1]) + ": " + V.type_name(arg1) + ", "
                                + V.type_name(arg) + ": " + sprint([arg]))
            if _is_nil(arg1) or _is_nil(arg):
                t = _is_nil(arg) == _is_nil(arg1)
            else:
                if not _comparable(arg):
                    raise FuncError(f"non-comparable type {sprintf('%s', [arg])}: {V.type_name(arg)}")
                if isinstance(arg1, V.Ptr) and isinstance(arg, V.Ptr):
                    t = arg1.target is arg.target
                else:
                    t = type(arg1) is type(arg) and arg1 is arg
        if t:
            return True
    return False


def b_ne(a: Any, b: Any) -> bool:
    return not b_eq(a, b)


def b_lt(a: Any, b: Any) -> bool:
    a = V.deiface(a)
    k1 = _basic_kind(a)
    if k1 is None:
        raise FuncError("invalid type for comparison")
    b = V.deiface(b)
    k2 = _basic_kind(b)
    if k2 is None:
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        if k1 == _INT and k2 == _UINT or k1 == _UINT and k2 == _INT:
            return int(a) < int(b)
        raise FuncError(f"incompatible types for comparison: {V.type_name(a)} and {V.type_name(b)}")
    if k1 in (_BOOL, _COMPLEX):
        raise FuncError("invalid type for comparison")
    if k1 == _STRING:
        return utf8(str(a)) < utf8(str(b))
    return a < b


def b_le(a: Any, b: Any) -> bool:
    return b_lt(a, b) or b_eq(a, b)


def b_gt(a: Any, b: Any) -> bool:
    return not b_le(a, b)


def b_ge(a: Any, b: Any) -> bool:
    return not b_lt(a, b)


def _eval_args(args: Sequence[Any]) -> str:
    if len(args) == 1 and type(args[0]) is str:
        return args[0]
    return sprint([_printable(a) for a in args])


def _printable(v: Any) -> Any:
    """Go's ``printableValue`` for ``html``/``js``/``urlquery`` operands: no value prints as such."""
    if v is None:
        return "<no value>"
    if isinstance(v, V.Ptr):
        v, _ = indirect(v)
        if isinstance(v, V.Ptr):
            return v
    return v


def html_escape(s: str) -> str:
    if not any(c in s for c in "'\"&<>\0"):
        return s
    return (s.replace("&", "&amp;").replace("\0", "\ufffd").replace('"', "&#34;").replace("'", "&#39;")
            .replace("<", "&lt;").replace(">", "&gt;"))


def js_escape(s: str) -> str:
    out = []
    for c in s:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'")
        elif c == '"':
            out.append('\\"')
        elif c == "<":
            out.append("\\u003C")
        elif c == ">":
            out.append("\\u003E")
        elif c == "&":
            out.append("\\u0026")
        elif c == "=":
            out.append("\\u003D")
        elif o < 0x20:
            out.append(f"\\u00{o:02X}")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(c)  # a byte that is not UTF-8 decodes as U+FFFD, which is printable: kept
        elif o >= 0x80 and not (c.isprintable() and not (c.isspace() and c != " ")):
            out.append(f"\\u{o:04X}")
        else:
            out.append(c)
    return "".join(out)


def query_escape(s: str) -> str:
    """``url.QueryEscape``."""
    return quote_plus(utf8(s), safe="-_.~")


BUILTINS: dict[str, Func] = {
    "and": Func("and", (RV,), None, RV),  # type: ignore[arg-type]
    "or": Func("or", (RV,), None, RV),  # type: ignore[arg-type]
    "call": Func("call", (RV,), None, RV),  # type: ignore[arg-type]
    "html": Func("html", (), lambda *a: html_escape(_eval_args(a)), ANY),
    "index": Func("index", (RV,), b_index, RV),
    "slice": Func("slice", (RV,), b_slice, RV),
    "js": Func("js", (), lambda *a: js_escape(_eval_args(a)), ANY),
    "len": Func("len", (RV,), b_len),
    "not": Func("not", (RV,), b_not),
    "print": Func("print", (), lambda *a: sprint(a), ANY),
    "printf": Func("printf", ("string",), lambda f, *a: sprintf(f, a), ANY),
    "println": Func("println", (), lambda *a: sprintln(a), ANY),
    "urlquery": Func("urlquery", (), lambda *a: query_escape(_eval_args(a)), ANY),
    "eq": Func("eq", (RV,), b_eq, RV),
    "ge": Func("ge", (RV, RV), b_ge),
    "gt": Func("gt", (RV, RV), b_gt),
    "le": Func("le", (RV, RV), b_le),
    "lt": Func("lt", (RV, RV), b_lt),
    "ne": Func("ne", (RV, RV), b_ne),
}


# ------------------------------------------------------------------------------------ state

class Template:
    """A parsed template set: the main tree and its ``define``/``block`` trees."""

    def __init__(self, name: str, trees: dict[str, P.Tree]) -> None:
        self.name = name
        self.trees = trees

    def execute(self, data: Any, funcs: dict[str, Func]) -> str:
        st = _State(self, funcs)
        return st.run(data)


class _State:
    def __init__(self, tmpl: Template, funcs: dict[str, Func]) -> None:
        self.set = tmpl
        self.tmpl_name = tmpl.name
        self.funcs = funcs
        self.out: list[str] = []
        self.node: Optional[P.Node] = None
        self.vars: list[list] = []
        self.depth = 0

    def run(self, data: Any) -> str:
        tree = self.set.trees.get(self.set.name)
        self.vars = [["$", data]]
        if tree is None or tree.root is None:
            self.errorf("%q is an incomplete or empty template", self.set.name)
        try:
            self.walk(data, tree.root)
        except _TooDeep as e:
            self.node, self.tmpl_name = e.at_go_limit()
            self.errorf("exceeded maximum template depth (%v)", MAX_EXEC_DEPTH)
        return "".join(self.out)

    # errors ---------------------------------------------------------------------------------
    def errorf(self, fmt: str, *args: Any) -> None:
        """Go's ``state.errorf``: the location and node go into the format string itself (the
        template name undoubled there, as Go has it: a ``%`` in a name reads as a verb)."""
        name = self.tmpl_name.replace("%", "%%")
        if self.node is None:
            fmt = sprintf("template: %s: %s", [name, fmt])
        else:
            fmt = sprintf("template: %s: executing %q at <%s>: %s",
                          [self.node.location(), name, str(self.node).replace("%", "%%"), fmt])
        raise ExecError(sprintf(fmt, args))

    # variables -------------------------------------------------------------------------------
    def push(self, name: str, value: Any) -> None:
        self.vars.append([name, value])

    def set_var(self, name: str, value: Any) -> None:
        for v in reversed(self.vars):
            if v[0] == name:
                v[1] = value
                return
        self.errorf("undefined variable: %s", name)

    def var_value(self, name: str) -> Any:
        for v in reversed(self.vars):
            if v[0] == name:
                return v[1]
        self.errorf("undefined variable: %s", name)

    # walking -----------------------------------------------------------------------------------
    def walk(self, dot: Any, node: P.Node) -> None:
        self.node = node
        t = type(node)
        if t is P.TextNode:
            self.out.append(node.text)
        elif t is P.ActionNode:
            val = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.print_value(node, val)
        elif t is P.ListNode:
            for n in node.nodes:
                self.walk(dot, n)
        elif isinstance(node, (P.IfNode, P.WithNode)):
            self.walk_if_with(isinstance(node, P.WithNode), dot, node)
        elif isinstance(node, P.RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, P.TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, P.ContinueNode):
            raise _Continue()
        elif isinstance(node, P.BreakNode):
            raise _Break()
        elif isinstance(node, P.CommentNode):
            pass
        else:
            self.errorf("unknown node: %s", N(node))

    def walk_if_with(self, is_with: bool, dot: Any, node: P.BranchNode) -> None:
        mark = len(self.vars)
        try:
            val = self.eval_pipeline(dot, node.pipe)
            t, ok = V.is_true(V.deiface(val))
            if not ok:
                self.errorf("if/with can't use %v", val)
            if t:
                self.walk(val if is_with else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot: Any, r: P.RangeNode) -> None:
        self.node = r
        mark0 = len(self.vars)
        try:
            val, _ = indirect(self.eval_pipeline(dot, r.pipe))
            mark = len(self.vars)
            decl = r.pipe.decl

            def one(index: Any, elem: Any) -> None:
                if decl:
                    if r.pipe.is_assign:
                        self.set_var(decl[0].ident[0], index if len(decl) > 1 else elem)
                    else:
                        self.vars[-1][1] = elem
                if len(decl) > 1:
                    if r.pipe.is_assign:
                        self.set_var(decl[1].ident[0], elem)
                    else:
                        self.vars[-2][1] = index
                try:
                    self.walk(elem, r.list)
                except _Continue:
                    pass
                finally:
                    del self.vars[mark:]

            k = V.kind(val)
            ran = False
            try:
                if k in (V.INT, V.UINT) or isinstance(val, V.GoDuration):
                    dur = isinstance(val, V.GoDuration)  # an int64 underneath: 0..d-1 as durations
                    if len(decl) > 1:
                        self.errorf("can't use %v to iterate over more than one variable",
                                    V.NamedInt(val.ns, "time.Duration", val.string()) if dur else val)
                    for i in range(val.ns if dur else int(val)):
                        ran = True
                        one(None, V.GoDuration(i) if dur else i)
                elif k == V.SLICE:
                    for i, e in enumerate(val.items):
                        ran = True
                        one(i, e)
                elif k == V.MAP:
                    for key in sorted(val.d, key=utf8):
                        ran = True
                        one(key, val.get(key))
                elif k == V.INVALID:
                    pass
                else:
                    self.errorf("range can't iterate over %v", val)
            except _Break:
                return
            if not ran and r.else_list is not None:
                self.walk(dot, r.else_list)
        finally:
            del self.vars[mark0:]

    def walk_template(self, dot: Any, t: P.TemplateNode) -> None:
        self.node = t
        tree = self.set.trees.get(t.name)
        if tree is None or tree.root is None:
            self.errorf("template %q not defined", t.name)
        if self.depth == MAX_EXEC_DEPTH:
            self.errorf("exceeded maximum template depth (%v)", MAX_EXEC_DEPTH)
        dot = self.eval_pipeline(dot, t.pipe)
        saved = (self.tmpl_name, self.vars, self.depth)
        self.tmpl_name, self.vars, self.depth = t.name, [["$", dot]], self.depth + 1
        try:
            self.walk(dot, tree.root)
        except RecursionError:
            # Python's stack ends long before Go's 100000 nested templates: report it as Go would
            # (raised on, to be formatted up the stack where there is room)
            deep = _TooDeep()
            deep.frames.append((t, saved[0], saved[2]))
            raise deep from None
        except _TooDeep as e:
            if len(e.frames) < 64:
                e.frames.append((t, saved[0], saved[2]))
            raise
        finally:
            self.tmpl_name, self.vars, self.depth = saved

    def print_value(self, n: P.Node, v: Any) -> None:
        self.node = n
        if isinstance(v, V.Ptr):
            v, _ = indirect(v)
        if v is None:
            self.out.append("<no value>")
        elif type(v) is str:
            self.out.append(v)
        elif type(v) is float:
            self.out.append(format_float(v, "g", -1))
        else:
            self.out.append(sprint([v]))

    # evaluation --------------------------------------------------------------------------------
    def eval_pipeline(self, dot: Any, pipe: Optional[P.PipeNode]) -> Any:
        if pipe is None:
            return None
        self.node = pipe
        value: Any = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if isinstance(value, V.Iface):
                value = value.v
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.ident[0], value)
            else:
                self.push(var.ident[0], value)
        return value

    def not_a_function(self, args: Optional[list], final: Any) -> None:
        if (args is not None and len(args) > 1) or final is not MISSING:
            self.errorf("can't give argument to non-function %s", N(args[0]))

    def eval_command(self, dot: Any, cmd: P.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, P.FieldNode):
            return self.eval_field_node(dot, first, cmd.args, final)
        if isinstance(first, P.ChainNode):
            return self.eval_chain_node(dot, first, cmd.args, final)
        if isinstance(first, P.IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, P.PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, P.VariableNode):
            return self.eval_variable_node(dot, first, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if isinstance(first, P.BoolNode):
            return first.val
        if isinstance(first, P.DotNode):
            return dot
        if isinstance(first, P.NilNode):
            self.errorf("nil is not a command")
        if isinstance(first, P.NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, P.StringNode):
            return first.text
        self.errorf("can't evaluate command %q", N(first))

    def ideal_constant(self, c: P.NumberNode) -> Any:
        self.node = c
        t = c.text
        if c.is_complex:
            return c.complex128
        is_hex_int = len(t) > 2 and t[0] == "0" and t[1] in "xX" and not any(x in t for x in "pP")
        if c.is_float and not is_hex_int and not t.startswith("'") and any(x in t for x in ".eEpP"):
            return c.float64
        if c.is_int:
            return c.int64
        if c.is_uint:
            self.errorf("%s overflows int", t)
        return None

    def eval_field_node(self, dot: Any, field: P.FieldNode, args: Optional[list], final: Any) -> Any:
        self.node = field
        return self.eval_field_chain(dot, dot, field, field.ident, args, final)

    def eval_chain_node(self, dot: Any, chain: P.ChainNode, args: Optional[list], final: Any) -> Any:
        self.node = chain
        if isinstance(chain.node, P.NilNode):
            self.errorf("indirection through explicit nil in %s", N(chain))
        pipe = self.eval_arg(dot, None, chain.node)
        return self.eval_field_chain(dot, pipe, chain, chain.fields, args, final)

    def eval_variable_node(self, dot: Any, var: P.VariableNode, args: Optional[list], final: Any) -> Any:
        self.node = var
        value = self.var_value(var.ident[0])
        if len(var.ident) == 1:
            self.not_a_function(args, final)
            return value
        return self.eval_field_chain(dot, value, var, var.ident[1:], args, final)

    def eval_field_chain(self, dot: Any, receiver: Any, node: P.Node, ident: list, args: Optional[list],
                         final: Any) -> Any:
        for name in ident[:-1]:
            receiver = self.eval_field(dot, name, node, None, MISSING, receiver)
        return self.eval_field(dot, ident[-1], node, args, final, receiver)

    def eval_function(self, dot: Any, node: P.IdentifierNode, cmd: P.Node, args: Optional[list],
                      final: Any) -> Any:
        self.node = node
        name = node.ident
        fn = self.funcs.get(name)
        builtin = False
        if fn is None:
            fn = BUILTINS.get(name)
            builtin = fn is not None
        if fn is None:
            self.errorf("%q is not a defined function", name)
        return self.eval_call(dot, fn, builtin, cmd, name, args, final)

    def eval_field(self, dot: Any, name: str, node: P.Node, args: Optional[list], final: Any,
                   receiver: Any) -> Any:
        if receiver is None:
            return None  # missingkey=zero: a missing value yields no value
        typ = V.type_name(receiver)
        recv, isnil = indirect(receiver)
        if isinstance(recv, V.Iface) and isnil:
            self.errorf("nil pointer evaluating %s.%s", T(typ), name)
        method = _method(recv, name)
        if method is not None:
            return self.eval_call(dot, method, False, node, name, args, final)
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if isinstance(recv, V.GoStruct):
            if name in recv.fields:
                if has_args:
                    self.errorf("%s has arguments but cannot be invoked as function", name)
                return recv.field(name)
        elif isinstance(recv, V.GoMap):
            if has_args:
                self.errorf("%s is not a method but has arguments", name)
            return recv.get(name)
        elif isinstance(recv, V.Ptr) and isnil:
            if name in ("Labels", "Value"):
                self.errorf("nil pointer evaluating %s.%s", T(typ), name)
        self.errorf("can't evaluate field %s in type %s", name, T(typ))

    def eval_call(self, dot: Any, fn: Func, builtin: bool, node: P.Node, name: str, args: Optional[list],
                  final: Any) -> Any:
        args = list(args[1:]) if args is not None else []
        num_in = len(args) + (final is not MISSING)
        params = fn.params
        if fn.variadic is not None:
            num_fixed = len(params)
            if num_in < num_fixed:
                self.errorf("wrong number of args for %s: want at least %d got %d", name, num_fixed, len(args))
        else:
            num_fixed = len(args)
            if num_in != len(params):
                self.errorf("wrong number of args for %s: want %d got %d", name, len(params), num_in)
        if builtin and name in ("and", "or"):
            v: Any = None
            for arg in args:
                v = self.eval_arg(dot, RV, arg)
                if truth(v) == (name == "or"):
                    return v
            if final is not MISSING:
                v = self.validate_type(final, RV)
            return v
        argv: list[Any] = []
        i = 0
        while i < num_fixed and i < len(args):
            argv.append(self.eval_arg(dot, params[i], args[i]))
            i += 1
        if fn.variadic is not None:
            while i < len(args):
                argv.append(self.eval_arg(dot, fn.variadic, args[i]))
                i += 1
        if final is not MISSING:
            if fn.variadic is not None and not (num_in - 1 < num_fixed):
                t = fn.variadic
            else:
                t = params[num_in - 1] if fn.variadic is not None else params[-1]
            argv.append(self.validate_type(final, t))
        # arguments of interface type reach the function as their concrete values
        types = list(params) + [fn.variadic] * (len(argv) - len(params))
        argv = [a if t == RV else V.deiface(a) for a, t in zip(argv, types)]
        if builtin and name == "call":
            callee = str(args[0]) if args else str(final)
            return self._call(callee, argv, node)
        try:
            return fn.impl(*argv)
        except FuncError as e:
            self.node = node
            self.errorf("error calling %s: %w", name, GoErr(str(e)))

    def _call(self, callee: str, argv: list, node: P.Node) -> Any:
        fn = V.deiface(argv[0])
        self.node = node
        if fn is None:
            self.errorf("error calling %s: %w", "call", GoErr("call of nil"))
        self.errorf("error calling %s: %w", "call", GoErr(f"non-function {callee} of type {V.type_name(fn)}"))

    def validate_type(self, value: Any, typ: Optional[str]) -> Any:
        if value is None:
            if typ is None:
                return None
            if can_be_nil(typ):
                return zero_of(typ)
            self.errorf("invalid value; expected %s", T(typ))
        if typ is None or typ in (RV, ANY):
            return value
        vt = V.type_name(value)
        if vt != typ:
            if isinstance(value, V.Iface) and value.v is not None:
                value = value.v
                if V.type_name(value) == typ:
                    return value
            if isinstance(value, V.Ptr) and value.typ == "*" + typ:
                if value.target is None:
                    self.errorf("dereference of nil pointer of type %s", T(typ))
                return value.target
            self.errorf("wrong type for value; expected %s; got %s", T(typ), T(V.type_name(value)))
        return value

    def eval_arg(self, dot: Any, typ: Optional[str], n: P.Node) -> Any:
        self.node = n
        if isinstance(n, P.DotNode):
            return self.validate_type(dot, typ)
        if isinstance(n, P.NilNode):
            if can_be_nil(typ):
                return zero_of(typ) if typ else None
            self.errorf("cannot assign nil to %s", T(typ))
        if isinstance(n, P.FieldNode):
            return self.validate_type(self.eval_field_node(dot, n, [n], MISSING), typ)
        if isinstance(n, P.VariableNode):
            return self.validate_type(self.eval_variable_node(dot, n, None, MISSING), typ)
        if isinstance(n, P.PipeNode):
            return self.validate_type(self.eval_pipeline(dot, n), typ)
        if isinstance(n, P.IdentifierNode):
            return self.validate_type(self.eval_function(dot, n, n, None, MISSING), typ)
        if isinstance(n, P.ChainNode):
            return self.validate_type(self.eval_chain_node(dot, n, None, MISSING), typ)
        if typ == "bool":
            if isinstance(n, P.BoolNode):
                return n.val
            self.errorf("expected bool; found %s", N(n))
        if typ == "float64":
            if isinstance(n, P.NumberNode) and n.is_float:
                return n.float64
            self.errorf("expected float; found %s", N(n))
        if typ in ("int", "int64"):
            if isinstance(n, P.NumberNode) and n.is_int:
                return n.int64
            self.errorf("expected integer; found %s", N(n))
        if typ in (ANY, RV):
            return self.eval_empty_interface(dot, n)
        if typ == "string":
            if isinstance(n, P.StringNode):
                return n.text
            self.errorf("expected string; found %s", N(n))
        self.errorf("can't handle %s for arg of type %s", N(n), T(typ))

    def eval_empty_interface(self, dot: Any, n: P.Node) -> Any:
        self.node = n
        if isinstance(n, P.BoolNode):
            return n.val
        if isinstance(n, P.DotNode):
            return dot
        if isinstance(n, P.FieldNode):
            return self.eval_field_node(dot, n, None, MISSING)
        if isinstance(n, P.IdentifierNode):
            return self.eval_function(dot, n, n, None, MISSING)
        if isinstance(n, P.NilNode):
            self.errorf("evalEmptyInterface: nil (can't happen)")
        if isinstance(n, P.NumberNode):
            return self.ideal_constant(n)
        if isinstance(n, P.StringNode):
            return n.text
        if isinstance(n, P.VariableNode):
            return self.eval_variable_node(dot, n, None, MISSING)
        if isinstance(n, P.PipeNode):
            return self.eval_pipeline(dot, n)
        self.errorf("can't handle assignment of %s to empty interface argument", N(n))


# ------------------------------------------------------------------------------------ methods

def _method(recv: Any, name: str) -> Optional[Func]:
    """A method of ``time.Time`` / ``time.Duration`` (the values ``toTime``/``toDuration`` give)."""
    if isinstance(recv, V.GoTime):
        from .funcs import time_method
        return time_method(recv, name)
    if isinstance(recv, V.GoDuration):
        from .funcs import duration_method
        return duration_method(recv, name)
    return None


__all__ = ["Template", "Func", "FuncError", "ExecError", "BUILTINS", "MISSING"]
