"""Lexer and parser of Go's ``text/template`` language.

The tree and the error texts follow Go's ``text/template/parse`` (what a Prometheus rule file is
validated and rendered with): ``template: NAME:LINE: MESSAGE`` for syntax errors, nodes that print
back as Go prints them (an execution error quotes the node: ``at <index . 5>``) and byte offsets for
the ``LINE:COL`` of execution errors.
"""
from __future__ import annotations

from typing import Any, Optional

from pythanos import gofmt

from . import strconv as _sc
from . import values as V
from .printf import GoErr, quote, sprintf

# item types
(ERROR, BOOL, CHAR, CHARCONST, COMMENT, COMPLEX, ASSIGN, DECLARE, EOF, FIELD, IDENT, LDELIM, LPAREN,
 NUMBER, PIPE, RAWSTRING, RDELIM, RPAREN, SPACE, STRING, TEXT, VARIABLE,
 KEYWORD, K_BLOCK, K_BREAK, K_CONTINUE, DOT, K_DEFINE, K_ELSE, K_END, K_IF, K_NIL, K_RANGE, K_TEMPLATE,
 K_WITH) = range(35)

_KEYWORDS = {".": DOT, "block": K_BLOCK, "break": K_BREAK, "continue": K_CONTINUE, "define": K_DEFINE,
             "else": K_ELSE, "end": K_END, "if": K_IF, "range": K_RANGE, "nil": K_NIL,
             "template": K_TEMPLATE, "with": K_WITH}

_SPACE = " \t\r\n"
LEFT, RIGHT = "{{", "}}"


class ParseError(ValueError):
    """A template Go's parser rejects; ``str()`` is Go's text."""


class Item:
    __slots__ = ("typ", "pos", "val", "line")

    def __init__(self, typ: int, pos: int, val: str, line: int) -> None:
        self.typ, self.pos, self.val, self.line = typ, pos, val, line

    def __str__(self) -> str:
        if self.typ == EOF:
            return "EOF"
        if self.typ == ERROR:
            return self.val
        if self.typ > KEYWORD:
            return f"<{self.val}>"
        if len(self.val.encode("utf-8", "surrogateescape")) > 10:
            return quote(self.val[:10]) + "..."
        return quote(self.val)


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or (c.isdigit() and c.isdecimal())


def _left_trim(s: str, i: int) -> bool:
    return len(s) >= i + 2 and s[i] == "-" and s[i + 1] in _SPACE


def _right_trim(s: str, i: int) -> bool:
    return len(s) >= i + 2 and s[i] in _SPACE and s[i + 1] == "-"


class Lexer:
    """Go's template scanner, one item per :meth:`next_item` call."""

    def __init__(self, text: str, break_ok: bool = True, continue_ok: bool = True) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.line = 1
        self.start_line = 1
        self.inside = False
        self.paren = 0
        self.break_ok, self.continue_ok = break_ok, continue_ok
        self.done = False

    # helpers -------------------------------------------------------------------------------
    def _item(self, typ: int) -> Item:
        it = Item(typ, self.start, self.input[self.start:self.pos], self.start_line)
        self.start = self.pos
        self.start_line = self.line
        return it

    def _ignore(self) -> None:
        self.line += self.input.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def _error(self, msg: str) -> Item:
        it = Item(ERROR, self.start, msg, self.start_line)
        self.input = ""
        self.pos = self.start = 0
        self.done = True
        return it

    def _peek(self) -> str:
        return self.input[self.pos] if self.pos < len(self.input) else ""

    def _next(self) -> str:
        if self.pos >= len(self.input):
            self.pos += 1  # past the end: backup() restores
            return ""
        c = self.input[self.pos]
        self.pos += 1
        if c == "\n":
            self.line += 1
        return c

    def _backup(self) -> None:
        if self.pos > len(self.input):
            self.pos = len(self.input)
            return
        self.pos -= 1
        if self.input[self.pos] == "\n":
            self.line -= 1

    def _at_right_delim(self) -> tuple[bool, bool]:
        s, p = self.input, self.pos
        if _right_trim(s, p) and s.startswith(RIGHT, p + 2):
            return True, True
        if s.startswith(RIGHT, p):
            return True, False
        return False, False

    def _at_terminator(self) -> bool:
        c = self._peek()
        if c == "" or c in _SPACE or c in ".,|:)(":
            return True
        return self.input.startswith(RIGHT, self.pos)

    # states --------------------------------------------------------------------------------
    def next_item(self) -> Item:
        if self.done:
            return Item(EOF, self.pos, "EOF", self.start_line)
        while True:
            it = self._inside() if self.inside else self._text()
            if it is not None:
                return it

    def _text(self) -> Optional[Item]:
        s = self.input
        x = s.find(LEFT, self.pos)
        if x >= 0:
            if x > self.pos:
                self.pos = x
                trim = 0
                if _left_trim(s, x + len(LEFT)):
                    seg = s[self.start:self.pos]
                    trim = len(seg) - len(seg.rstrip(_SPACE))
                self.pos -= trim
                self.line += s.count("\n", self.start, self.pos)
                it = self._item(TEXT)
                self.pos += trim
                self._ignore()
                if it.val:
                    return it
            return self._left_delim()
        self.pos = len(s)
        if self.pos > self.start:
            self.line += s.count("\n", self.start, self.pos)
            return self._item(TEXT)
        it = self._item(EOF)
        self.done = True
        return it

    def _left_delim(self) -> Optional[Item]:
        s = self.input
        self.pos += len(LEFT)
        trim = _left_trim(s, self.pos)
        after = 2 if trim else 0
        if s.startswith("/*", self.pos + after):
            self.pos += after
            self._ignore()
            return self._comment()
        it = self._item(LDELIM)
        self.inside = True
        self.pos += after
        self._ignore()
        self.paren = 0
        return it

    def _comment(self) -> Optional[Item]:
        s = self.input
        self.pos += 2
        x = s.find("*/", self.pos)
        if x < 0:
            return self._error("unclosed comment")
        self.pos = x + 2
        delim, trim = self._at_right_delim()
        if not delim:
            return self._error("comment ends before closing delimiter")
        self.line += s.count("\n", self.start, self.pos)
        self._item(COMMENT)
        if trim:
            self.pos += 2
        self.pos += len(RIGHT)
        if trim:
            seg = s[self.pos:]
            self.pos += len(seg) - len(seg.lstrip(_SPACE))
        self._ignore()
        return None  # comments are not emitted

    def _right_delim(self) -> Item:
        s = self.input
        _, trim = self._at_right_delim()
        if trim:
            self.pos += 2
            self._ignore()
        self.pos += len(RIGHT)
        it = self._item(RDELIM)
        if trim:
            seg = s[self.pos:]
            self.pos += len(seg) - len(seg.lstrip(_SPACE))
            self._ignore()
        self.inside = False
        return it

    def _inside(self) -> Optional[Item]:
        delim, _ = self._at_right_delim()
        if delim:
            if self.paren == 0:
                return self._right_delim()
            return self._error("unclosed left paren")
        c = self._next()
        if c == "":
            return self._error("unclosed action")
        if c in _SPACE:
            self._backup()
            return self._space()
        if c == "=":
            return self._item(ASSIGN)
        if c == ":":
            if self._next() != "=":
                return self._error("expected :=")
            return self._item(DECLARE)
        if c == "|":
            return self._item(PIPE)
        if c == '"':
            return self._quote()
        if c == "`":
            return self._raw_quote()
        if c == "$":
            return self._variable()
        if c == "'":
            return self._char()
        if c == ".":
            if self.pos < len(self.input) and not ("0" <= self.input[self.pos] <= "9"):
                return self._field_or_var(FIELD)
            self._backup()
            return self._number()
        if c in "+-" or "0" <= c <= "9":
            self._backup()
            return self._number()
        if _is_alnum(c):
            self._backup()
            return self._identifier()
        if c == "(":
            self.paren += 1
            return self._item(LPAREN)
        if c == ")":
            self.paren -= 1
            if self.paren < 0:
                return self._error("unexpected right paren")
            return self._item(RPAREN)
        if ord(c) < 0x80 and c.isprintable():
            return self._item(CHAR)
        return self._error(f"unrecognized character in action: {_rune(c)}")

    def _space(self) -> Optional[Item]:
        n = 0
        while True:
            c = self._peek()
            if c == "" or c not in _SPACE:
                break
            self._next()
            n += 1
        s = self.input
        if _right_trim(s, self.pos - 1) and s.startswith(RIGHT, self.pos - 1 + 2):
            self._backup()
            if n == 1:
                return self._right_delim()
        return self._item(SPACE)

    def _identifier(self) -> Item:
        while True:
            c = self._next()
            if c and _is_alnum(c):
                continue
            self._backup()
            word = self.input[self.start:self.pos]
            if not self._at_terminator():
                return self._error(f"bad character {_rune(self._peek())}")
            k = _KEYWORDS.get(word)
            if k is not None and k > KEYWORD:
                if (k == K_BREAK and not self.break_ok) or (k == K_CONTINUE and not self.continue_ok):
                    return self._item(IDENT)
                return self._item(k)
            if word[0] == ".":
                return self._item(FIELD)
            if word in ("true", "false"):
                return self._item(BOOL)
            return self._item(IDENT)

    def _variable(self) -> Item:
        if self._at_terminator():
            return self._item(VARIABLE)
        return self._field_or_var(VARIABLE)

    def _field_or_var(self, typ: int) -> Item:
        if self._at_terminator():
            return self._item(VARIABLE if typ == VARIABLE else DOT)
        while True:
            c = self._next()
            if not (c and _is_alnum(c)):
                self._backup()
                break
        if not self._at_terminator():
            return self._error(f"bad character {_rune(self._peek())}")
        return self._item(typ)

    def _char(self) -> Item:
        return self._quoted("'", CHARCONST, "unterminated character constant")

    def _accept(self, valid: str) -> bool:
        c = self._next()
        if c and c in valid:
            return True
        self._backup()
        return False

    def _accept_run(self, valid: str) -> None:
        while True:
            c = self._next()
            if not (c and c in valid):
                self._backup()
                return

    def _scan_number(self) -> bool:
        self._accept("+-")
        digits = "0123456789_"
        if self._accept("0"):
            if self._accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self._accept("oO"):
                digits = "01234567_"
            elif self._accept("bB"):
                digits = "01_"
        self._accept_run(digits)
        if self._accept("."):
            self._accept_run(digits)
        if len(digits) == 11 and self._accept("eE"):
            self._accept("+-")
            self._accept_run("0123456789_")
        if len(digits) == 23 and self._accept("pP"):
            self._accept("+-")
            self._accept_run("0123456789_")
        self._accept("i")
        c = self._peek()
        if c and _is_alnum(c):
            self._next()
            return False
        return True

    def _number(self) -> Item:
        if not self._scan_number():
            return self._error(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
        c = self._peek()
        if c in ("+", "-") and c:
            if not self._scan_number() or self.input[self.pos - 1] != "i":
                return self._error(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
            return self._item(COMPLEX)
        return self._item(NUMBER)

    def _quote(self) -> Item:
        return self._quoted('"', STRING, "unterminated quoted string")

    def _quoted(self, close: str, typ: int, unterminated: str) -> Item:
        """The rest of a quoted string or character constant (escapes are checked when parsed)."""
        while True:
            c = self._next()
            if c == "\\":
                if self._next() not in ("", "\n"):
                    continue
                return self._error(unterminated)
            if c in ("", "\n"):
                return self._error(unterminated)
            if c == close:
                return self._item(typ)

    def _raw_quote(self) -> Item:
        while True:
            c = self._next()
            if c == "":
                return self._error("unterminated raw quoted string")
            if c == "`":
                return self._item(RAWSTRING)


def _rune(c: str) -> str:
    """Go's ``%#U``: ``U+0023 '#'``."""
    if not c:
        return "U+FFFFFFFF"
    o = ord(c)
    s = f"U+{o:04X}"
    if c.isprintable() or c == " ":
        s += f" '{c}'"
    return s


# ------------------------------------------------------------------------------------ nodes

class Tree:
    """One named template: its root list and the text it was parsed from (for error positions)."""
    __slots__ = ("name", "parse_name", "text", "root")

    def __init__(self, name: str, parse_name: str, text: str) -> None:
        self.name, self.parse_name, self.text = name, parse_name, text
        self.root: Optional[ListNode] = None


class Node:
    __slots__ = ("pos", "tr")

    def location(self) -> str:
        """``NAME:LINE:COL`` (COL: bytes from the line start, 0-based; on line 1 the offset)."""
        text = self.tr.text[:self.pos]
        nl = text.rfind("\n")
        if nl < 0:
            col = len(gofmt_bytes(text))
        else:
            col = len(gofmt_bytes(text[nl + 1:]))
        return f"{self.tr.parse_name}:{1 + text.count(chr(10))}:{col}"


def gofmt_bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


class ListNode(Node):
    __slots__ = ("nodes",)

    def __init__(self, tr: Tree, pos: int) -> None:
        self.tr, self.pos, self.nodes = tr, pos, []

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class TextNode(Node):
    __slots__ = ("text",)

    def __init__(self, tr: Tree, pos: int, text: str) -> None:
        self.tr, self.pos, self.text = tr, pos, text

    def __str__(self) -> str:
        return self.text


class CommentNode(Node):
    __slots__ = ("text",)

    def __init__(self, tr: Tree, pos: int, text: str) -> None:
        self.tr, self.pos, self.text = tr, pos, text

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


class PipeNode(Node):
    __slots__ = ("line", "decl", "is_assign", "cmds")

    def __init__(self, tr: Tree, pos: int, line: int) -> None:
        self.tr, self.pos, self.line = tr, pos, line
        self.decl: list[VariableNode] = []
        self.is_assign = False
        self.cmds: list[CommandNode] = []

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class ActionNode(Node):
    __slots__ = ("line", "pipe")

    def __init__(self, tr: Tree, pos: int, line: int, pipe: PipeNode) -> None:
        self.tr, self.pos, self.line, self.pipe = tr, pos, line, pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class CommandNode(Node):
    __slots__ = ("args",)

    def __init__(self, tr: Tree, pos: int) -> None:
        self.tr, self.pos, self.args = tr, pos, []

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


class IdentifierNode(Node):
    __slots__ = ("ident",)

    def __init__(self, tr: Tree, pos: int, ident: str) -> None:
        self.tr, self.pos, self.ident = tr, pos, ident

    def __str__(self) -> str:
        return self.ident


class VariableNode(Node):
    __slots__ = ("ident",)

    def __init__(self, tr: Tree, pos: int, ident: str) -> None:
        self.tr, self.pos, self.ident = tr, pos, ident.split(".")

    def __str__(self) -> str:
        return ".".join(self.ident)


class DotNode(Node):
    __slots__ = ()

    def __init__(self, tr: Tree, pos: int) -> None:
        self.tr, self.pos = tr, pos

    def __str__(self) -> str:
        return "."


class NilNode(Node):
    __slots__ = ()

    def __init__(self, tr: Tree, pos: int) -> None:
        self.tr, self.pos = tr, pos

    def __str__(self) -> str:
        return "nil"


class FieldNode(Node):
    __slots__ = ("ident",)

    def __init__(self, tr: Tree, pos: int, ident: str) -> None:
        self.tr, self.pos, self.ident = tr, pos, ident[1:].split(".")

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


class ChainNode(Node):
    __slots__ = ("node", "fields")

    def __init__(self, tr: Tree, pos: int, node: Node) -> None:
        self.tr, self.pos, self.node, self.fields = tr, pos, node, []

    def add(self, field: str) -> None:
        # a field item is ".a" or ".a.b"? the lexer gives one ".name" at a time
        self.fields.extend(field[1:].split("."))

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return head + "".join("." + f for f in self.fields)


class BoolNode(Node):
    __slots__ = ("val",)

    def __init__(self, tr: Tree, pos: int, val: bool) -> None:
        self.tr, self.pos, self.val = tr, pos, val

    def __str__(self) -> str:
        return "true" if self.val else "false"


class NumberNode(Node):
    __slots__ = ("text", "is_int", "is_uint", "is_float", "is_complex", "int64", "uint64", "float64",
                 "complex128")

    def __init__(self, tr: Tree, pos: int, text: str) -> None:
        self.tr, self.pos, self.text = tr, pos, text
        self.is_int = self.is_uint = self.is_float = self.is_complex = False
        self.int64 = self.uint64 = 0
        self.float64 = 0.0
        self.complex128 = 0j

    def __str__(self) -> str:
        return self.text


class StringNode(Node):
    __slots__ = ("quoted", "text")

    def __init__(self, tr: Tree, pos: int, quoted: str, text: str) -> None:
        self.tr, self.pos, self.quoted, self.text = tr, pos, quoted, text

    def __str__(self) -> str:
        return self.quoted


class EndNode(Node):
    __slots__ = ()

    def __init__(self, tr: Tree, pos: int) -> None:
        self.tr, self.pos = tr, pos

    def __str__(self) -> str:
        return "{{end}}"


class ElseNode(Node):
    __slots__ = ("line",)

    def __init__(self, tr: Tree, pos: int, line: int) -> None:
        self.tr, self.pos, self.line = tr, pos, line

    def __str__(self) -> str:
        return "{{else}}"


class BranchNode(Node):
    __slots__ = ("line", "pipe", "list", "else_list")
    word = ""

    def __init__(self, tr: Tree, pos: int, line: int, pipe: PipeNode, lst: ListNode,
                 else_list: Optional[ListNode]) -> None:
        self.tr, self.pos, self.line, self.pipe, self.list, self.else_list = tr, pos, line, pipe, lst, else_list

    def __str__(self) -> str:
        s = "{{" + self.word + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


class IfNode(BranchNode):
    __slots__ = ()
    word = "if"


class RangeNode(BranchNode):
    __slots__ = ()
    word = "range"


class WithNode(BranchNode):
    __slots__ = ()
    word = "with"


class BreakNode(Node):
    __slots__ = ("line",)

    def __init__(self, tr: Tree, pos: int, line: int) -> None:
        self.tr, self.pos, self.line = tr, pos, line

    def __str__(self) -> str:
        return "{{break}}"


class ContinueNode(BreakNode):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{continue}}"


class TemplateNode(Node):
    __slots__ = ("line", "name", "pipe")

    def __init__(self, tr: Tree, pos: int, line: int, name: str, pipe: Optional[PipeNode]) -> None:
        self.tr, self.pos, self.line, self.name, self.pipe = tr, pos, line, name, pipe

    def __str__(self) -> str:
        s = "{{template " + quote(self.name)
        if self.pipe is not None:
            s += " " + str(self.pipe)
        return s + "}}"


def _node_arg(n: Node) -> V.Stringer:
    return V.Stringer(str(n), "*parse." + type(n).__name__)


def is_empty_tree(n: Optional[Node]) -> bool:
    if n is None or isinstance(n, CommentNode):
        return True
    if isinstance(n, ListNode):
        return all(is_empty_tree(x) for x in n.nodes)
    if isinstance(n, TextNode):
        return not n.text.strip(" \t\n\r\v\f\x85\xa0")
    return False


# ------------------------------------------------------------------------------------ parser

MAX_STACK_DEPTH = 10000


class _Abort(Exception):
    pass


class Parser:
    """Parses one text into a set of named trees (the main one and every ``define``/``block``)."""

    def __init__(self, name: str, text: str, funcs: set[str]) -> None:
        self.name = name
        self.text = text
        self.funcs = funcs
        self.lex = Lexer(text, "break" not in funcs, "continue" not in funcs)
        self.tokens: list[Item] = [None, None, None]  # type: ignore[list-item]
        self.peek_count = 0
        self.trees: dict[str, Tree] = {}
        self.last_line = 1
        self.action_line = 0
        self.range_depth = 0
        self.stack_depth = 0
        self.vars: list[str] = ["$"]
        self.tree: Tree = Tree(name, name, text)

    # token stream -------------------------------------------------------------------------
    def _lexed(self) -> Item:
        it = self.lex.next_item()
        self.last_line = it.line
        return it

    def next(self) -> Item:
        if self.peek_count > 0:
            self.peek_count -= 1
        else:
            self.tokens[0] = self._lexed()
        return self.tokens[self.peek_count]

    def backup(self) -> None:
        self.peek_count += 1

    def backup2(self, t1: Item) -> None:
        self.tokens[1] = t1
        self.peek_count = 2

    def backup3(self, t2: Item, t1: Item) -> None:
        self.tokens[1] = t1
        self.tokens[2] = t2
        self.peek_count = 3

    def peek(self) -> Item:
        if self.peek_count > 0:
            return self.tokens[self.peek_count - 1]
        self.peek_count = 1
        self.tokens[0] = self._lexed()
        return self.tokens[0]

    def next_non_space(self) -> Item:
        while True:
            t = self.next()
            if t.typ != SPACE:
                return t

    def peek_non_space(self) -> Item:
        t = self.next_non_space()
        self.backup()
        return t

    # errors -------------------------------------------------------------------------------
    def errorf(self, fmt: str, *args: Any) -> None:
        """Go's ``Tree.errorf``: name and line go into the format string (a ``%`` in the name reads
        as a verb there, as in Go)."""
        full = sprintf("template: %s:%d: %s", [self.name, self.tokens[0].line, fmt])
        raise ParseError(sprintf(full, args))

    def _item_arg(self, t: Item) -> V.StringerStruct:
        """A token as Go formats it in an error: ``String()``, or the struct for other verbs."""
        pos = len(self.text[:t.pos].encode("utf-8", "surrogateescape"))
        return V.StringerStruct("parse.item", {"typ": V.NamedInt(t.typ, "parse.itemType"),
                                               "pos": V.NamedInt(pos, "parse.Pos"), "val": t.val,
                                               "line": t.line}, str(t))

    def expect(self, typ: int, context: str) -> Item:
        t = self.next_non_space()
        if t.typ != typ:
            self.unexpected(t, context)
        return t

    def expect_one_of(self, a: int, b: int, context: str) -> Item:
        t = self.next_non_space()
        if t.typ not in (a, b):
            self.unexpected(t, context)
        return t

    def unexpected(self, t: Item, context: str) -> None:
        if t.typ == ERROR:
            extra = ""
            if self.action_line != 0 and self.action_line != t.line:
                extra = f" in action started at {self.name}:{self.action_line}"
                if t.val.endswith(" action"):
                    extra = extra[len(" in action"):]
            self.errorf("%s%s", self._item_arg(t), extra)
        self.errorf("unexpected %s in %s", self._item_arg(t), context)

    # top level ------------------------------------------------------------------------------
    def parse(self) -> dict[str, Tree]:
        t = self.tree
        t.root = ListNode(t, self.peek().pos)
        while self.peek().typ != EOF:
            if self.peek().typ == LDELIM:
                delim = self.next()
                if self.next_non_space().typ == K_DEFINE:
                    self._definition()
                    continue
                self.backup2(delim)
            n = self._text_or_action()
            if isinstance(n, (EndNode, ElseNode)):
                self.errorf("unexpected %s", _node_arg(n))
            t.root.nodes.append(n)
        self._add(t)
        return self.trees

    def _add(self, tree: Tree) -> None:
        old = self.trees.get(tree.name)
        if old is None or is_empty_tree(old.root):
            self.trees[tree.name] = tree
            return
        if not is_empty_tree(tree.root):
            self.errorf("template: multiple definition of template %q", tree.name)

    def _with_tree(self, tree: Tree):
        outer, outer_vars = self.tree, self.vars
        self.tree, self.vars = tree, ["$"]
        return outer, outer_vars

    def _definition(self) -> None:
        context = "define clause"
        name = self.expect_one_of(STRING, RAWSTRING, context)
        tree = Tree("definition", self.name, self.text)
        try:
            tree.name = gofmt.unquote(name.val)
        except gofmt.UnquoteError as e:
            self.errorf("%s", GoErr(str(e)))
        outer, outer_vars = self._with_tree(tree)
        self.expect(RDELIM, context)
        tree.root, end = self._item_list()
        if not isinstance(end, EndNode):
            self.errorf("unexpected %s in %s", _node_arg(end), context)
        self._add(tree)
        self.tree, self.vars = outer, outer_vars

    def _item_list(self) -> tuple[ListNode, Node]:
        lst = ListNode(self.tree, self.peek_non_space().pos)
        while self.peek_non_space().typ != EOF:
            n = self._text_or_action()
            if isinstance(n, (EndNode, ElseNode)):
                return lst, n
            lst.nodes.append(n)
        self.errorf("unexpected EOF")
        raise AssertionError

    def _text_or_action(self) -> Node:
        t = self.next_non_space()
        if t.typ == TEXT:
            return TextNode(self.tree, t.pos, t.val)
        if t.typ == LDELIM:
            self.action_line = t.line
            try:
                return self._action()
            finally:
                self.action_line = 0
        if t.typ == COMMENT:
            return CommentNode(self.tree, t.pos, t.val)
        self.unexpected(t, "input")
        raise AssertionError

    def _action(self) -> Node:
        t = self.next_non_space()
        typ = t.typ
        if typ == K_BLOCK:
            return self._block()
        if typ == K_BREAK:
            return self._break_continue(t, "{{break}}", BreakNode)
        if typ == K_CONTINUE:
            return self._break_continue(t, "{{continue}}", ContinueNode)
        if typ == K_ELSE:
            return self._else()
        if typ == K_END:
            return EndNode(self.tree, self.expect(RDELIM, "end").pos)
        if typ == K_IF:
            return IfNode(self.tree, *self._control("if"))
        if typ == K_RANGE:
            return RangeNode(self.tree, *self._control("range"))
        if typ == K_TEMPLATE:
            return self._template()
        if typ == K_WITH:
            return WithNode(self.tree, *self._control("with"))
        self.backup()
        t = self.peek()
        return ActionNode(self.tree, t.pos, t.line, self._pipeline("command", RDELIM))

    def _break_continue(self, tok: Item, what: str, cls) -> Node:
        t = self.next_non_space()
        if t.typ != RDELIM:
            self.unexpected(t, what)
        if self.range_depth == 0:
            self.errorf(f"{what} outside {{{{range}}}}")
        return cls(self.tree, tok.pos, tok.line)

    def _pipeline(self, context: str, end: int) -> PipeNode:
        t = self.peek_non_space()
        pipe = PipeNode(self.tree, t.pos, t.line)
        while True:  # declarations
            v = self.peek_non_space()
            if v.typ != VARIABLE:
                break
            self.next()
            after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in (ASSIGN, DECLARE):
                pipe.is_assign = nxt.typ == ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(self.tree, v.pos, v.val))
                self.vars.append(v.val)
            elif nxt.typ == CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(self.tree, v.pos, v.val))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (VARIABLE, RDELIM, RPAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf("too many declarations in %s", context)
            elif after.typ == SPACE:
                self.backup3(v, after)
            else:
                self.backup2(v)
            break
        while True:
            t = self.next_non_space()
            if t.typ == end:
                self._check_pipeline(pipe, context)
                return pipe
            if t.typ in (BOOL, CHARCONST, COMPLEX, DOT, FIELD, IDENT, NUMBER, K_NIL, RAWSTRING, STRING,
                         VARIABLE, LPAREN):
                self.backup()
                pipe.cmds.append(self._command())
            else:
                self.unexpected(t, context)

    def _check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.errorf("missing value for %s", context)
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                self.errorf("non executable command in pipeline stage %d", i + 2)

    def _control(self, context: str):
        mark = len(self.vars)
        try:
            pipe = self._pipeline(context, RDELIM)
            if context == "range":
                self.range_depth += 1
            lst, nxt = self._item_list()
            if context == "range":
                self.range_depth -= 1
            else_list = None
            if isinstance(nxt, ElseNode):
                if context == "if" and self.peek().typ == K_IF:
                    self.next()
                    else_list = ListNode(self.tree, nxt.pos)
                    else_list.nodes.append(IfNode(self.tree, *self._control("if")))
                elif context == "with" and self.peek().typ == K_WITH:
                    self.next()
                    else_list = ListNode(self.tree, nxt.pos)
                    else_list.nodes.append(WithNode(self.tree, *self._control("with")))
                else:
                    else_list, nxt = self._item_list()
                    if not isinstance(nxt, EndNode):
                        self.errorf("expected end; found %s", _node_arg(nxt))
            return pipe.pos, pipe.line, pipe, lst, else_list
        finally:
            del self.vars[mark:]

    def _else(self) -> Node:
        p = self.peek_non_space()
        if p.typ in (K_IF, K_WITH):
            return ElseNode(self.tree, p.pos, p.line)
        t = self.expect(RDELIM, "else")
        return ElseNode(self.tree, t.pos, t.line)

    def _template_name(self, t: Item, context: str) -> str:
        if t.typ in (STRING, RAWSTRING):
            try:
                return gofmt.unquote(t.val)
            except gofmt.UnquoteError as e:
                self.errorf("%s", GoErr(str(e)))
        self.unexpected(t, context)
        raise AssertionError

    def _block(self) -> Node:
        context = "block clause"
        t = self.next_non_space()
        name = self._template_name(t, context)
        pipe = self._pipeline(context, RDELIM)
        block = Tree(name, self.name, self.text)
        outer, outer_vars = self._with_tree(block)
        block.root, end = self._item_list()
        if not isinstance(end, EndNode):
            self.errorf("unexpected %s in %s", _node_arg(end), context)
        self._add(block)
        self.tree, self.vars = outer, outer_vars
        return TemplateNode(self.tree, t.pos, t.line, name, pipe)

    def _template(self) -> Node:
        context = "template clause"
        t = self.next_non_space()
        name = self._template_name(t, context)
        pipe = None
        if self.next_non_space().typ != RDELIM:
            self.backup()
            pipe = self._pipeline(context, RDELIM)
        return TemplateNode(self.tree, t.pos, t.line, name, pipe)

    def _command(self) -> CommandNode:
        cmd = CommandNode(self.tree, self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            op = self._operand()
            if op is not None:
                cmd.args.append(op)
            t = self.next()
            if t.typ == SPACE:
                continue
            if t.typ in (RDELIM, RPAREN):
                self.backup()
            elif t.typ == PIPE:
                pass
            else:
                self.unexpected(t, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def _operand(self) -> Optional[Node]:
        node = self._term()
        if node is None:
            return None
        if self.peek().typ == FIELD:
            chain = ChainNode(self.tree, self.peek().pos, node)
            while self.peek().typ == FIELD:
                chain.add(self.next().val)
            if isinstance(node, FieldNode):
                node = FieldNode(self.tree, chain.pos, str(chain))
            elif isinstance(node, VariableNode):
                node = VariableNode(self.tree, chain.pos, str(chain))
            elif isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
                self.errorf("unexpected . after term %q", str(node))
            else:
                node = chain
        return node

    def _term(self) -> Optional[Node]:
        t = self.next_non_space()
        typ = t.typ
        if typ == IDENT:
            if t.val not in self.funcs:
                self.errorf("function %q not defined", t.val)
            return IdentifierNode(self.tree, t.pos, t.val)
        if typ == DOT:
            return DotNode(self.tree, t.pos)
        if typ == K_NIL:
            return NilNode(self.tree, t.pos)
        if typ == VARIABLE:
            v = VariableNode(self.tree, t.pos, t.val)
            if v.ident[0] not in self.vars:
                self.errorf("undefined variable %q", v.ident[0])
            return v
        if typ == FIELD:
            return FieldNode(self.tree, t.pos, t.val)
        if typ == BOOL:
            return BoolNode(self.tree, t.pos, t.val == "true")
        if typ in (CHARCONST, COMPLEX, NUMBER):
            try:
                return _number(self.tree, t.pos, t.val, typ)
            except ValueError as e:
                self.errorf("%s", GoErr(str(e)))
        if typ == LPAREN:
            if self.stack_depth >= MAX_STACK_DEPTH:
                self.errorf("max expression depth exceeded")
            self.stack_depth += 1
            try:
                return self._pipeline("parenthesized pipeline", RPAREN)
            finally:
                self.stack_depth -= 1
        if typ in (STRING, RAWSTRING):
            try:
                s = gofmt.unquote(t.val)
            except gofmt.UnquoteError as e:
                self.errorf("%s", GoErr(str(e)))
            return StringNode(self.tree, t.pos, t.val, s)
        self.backup()
        return None



def _float_or_none(text: str) -> Optional[float]:
    try:
        return _sc.parse_float(text)
    except ValueError:
        return None


def _number(tr: Tree, pos: int, text: str, typ: int) -> NumberNode:
    n = NumberNode(tr, pos, text)
    if typ == CHARCONST:
        r = None
        for end in range(2, len(text)):  # strconv.UnquoteChar: one character, then the tail
            try:
                r = gofmt.unquote("'" + text[1:end] + "'")
            except gofmt.UnquoteError:
                continue
            if text[end:] != "'":
                raise ValueError(f"malformed character constant: {text}")
            break
        if r is None:
            raise ValueError("invalid syntax")
        c = ord(r)
        if 0xDC80 <= c <= 0xDCFF:
            c -= 0xDC00
        n.int64 = n.uint64 = c
        n.float64 = float(c)
        n.is_int = n.is_uint = n.is_float = True
        return n
    if typ == COMPLEX:
        n.complex128 = _scan_complex(text)
        n.is_complex = True
        _simplify_complex(n)
        return n
    if text.endswith("i"):
        f = _float_or_none(text[:-1])
        if f is not None:
            n.is_complex = True
            n.complex128 = complex(0, f)
            _simplify_complex(n)
            return n
    i = _sc.parse_int(text)
    if i is not None:
        if 0 <= i < 1 << 64 and text[0] not in "+-":  # ParseUint takes no sign
            n.is_uint, n.uint64 = True, i
        if -(1 << 63) <= i < 1 << 63:
            n.is_int, n.int64 = True, i
            if i == 0:
                n.is_uint, n.uint64 = True, 0
    if n.is_int:
        n.is_float, n.float64 = True, float(n.int64)
    elif n.is_uint:
        n.is_float, n.float64 = True, float(n.uint64)
    else:
        f = _float_or_none(text)
        if f is not None:
            if not any(c in text for c in ".eEpP"):
                raise ValueError(f"integer overflow: {quote(text)}")
            n.is_float, n.float64 = True, f
            if f == int(f) and -(1 << 63) <= int(f) < (1 << 63):
                n.is_int, n.int64 = True, int(f)
            if f == int(f) and 0 <= int(f) < (1 << 64):
                n.is_uint, n.uint64 = True, int(f)
    if not (n.is_int or n.is_uint or n.is_float):
        raise ValueError(f"illegal number syntax: {quote(text)}")
    return n


def _scan_complex(text: str) -> complex:
    """``fmt.Sscan`` of a complex literal the lexer accepted (``1+2i``): the real part, the signed
    imaginary part, ``i``."""
    for k in range(len(text) - 1, 0, -1):
        if text[k] in "+-" and text[k - 1] not in "eEpP":
            real, imag = text[:k], text[k:-1]
            break
    else:
        raise ValueError("syntax error scanning complex number")
    if imag[1:] in ("", "i", "I") or not text.endswith("i"):
        raise ValueError("syntax error scanning complex number")
    return complex(_sc.parse_float(real), _sc.parse_float(imag))


def _simplify_complex(n: NumberNode) -> None:
    n.is_float = n.complex128.imag == 0
    if n.is_float:
        f = n.float64 = n.complex128.real
        n.is_int = f == int(f) and -(1 << 63) <= int(f) < (1 << 63)
        if n.is_int:
            n.int64 = int(f)
        n.is_uint = f == int(f) and 0 <= int(f) < (1 << 64)
        if n.is_uint:
            n.uint64 = int(f)


def parse(name: str, text: str, funcs: set[str]) -> dict[str, Tree]:
    """The named trees of ``text`` (the main one under ``name``); raises :class:`ParseError`."""
    return Parser(name, text, funcs).parse()
