"""moto (DynamoDB, DynamoDB Streams, Step Functions …) as a local AWS endpoint, in its own process.

``python -m streamer.local.moto_server --port P --lambda-endpoint URL`` serves moto's WSGI app with:

* Step Functions **execution on** (``{"stepfunctions": {"execute_state_machine": true}}``) before any state
  machine can be created — the interpreter keeps its own store, so this cannot be switched later;
* ``MOTO_PORT`` set to the port served: in server mode moto's interpreter sends its Lambda calls to
  ``http://localhost:$MOTO_PORT``, i.e. back into this server;
* a WSGI middleware that forwards ``POST /2015-03-31/functions/{name}/invocations`` (and nothing else) to our
  Lambda endpoint, so a Task state runs the real handler (moto's own Lambda would need Docker);
* JSONata (``QueryLanguage: JSONata``, ``Assign``/``$var``) evaluated by ``jsonata-python`` instead of moto's
  stub, when that package is installed (a private hook of moto 5.2.5: the version is pinned);
* the engine's per-execution costs cut (:func:`speed_up_sfn`, private hooks of moto 5.2.5 like the JSONata
  one): a state machine's definition is parsed once per process, not once per execution, and a Task's
  Lambda client is built once per process and calls our Lambda endpoint directly, over kept-alive
  connections (moto builds a boto3 client for every Task and sends it back into this server, which
  forwarded it: two HTTP requests and ~10 ms of CPU per Task), and each JSONPath parsed once per process
  (:func:`speed_up_sfn_paths`);
* DynamoDB's ``Query`` reading one partition instead of sorting the whole table, its item operations and
  DynamoDB Streams' ``GetRecords`` answered with their JSON instead of moto's model-driven serializer, each
  ``UpdateItem`` expression parsed and each condition expression lexed once per process
  (:func:`speed_up_dynamodb_queries`, :func:`speed_up_dynamodb_responses`, :func:`speed_up_dynamodb_updates`,
  :func:`speed_up_dynamodb_conditions`; same answers, compared in the functional tests), and moto's routing
  of a request without listing its own package directory each time (:func:`speed_up_dispatch`);
* a bounded server (``streamer.local.serving``): connections are served by :data:`POOL_SIZE` threads
  instead of a new thread each, listening with a large backlog (1024).

What moto's interpreter supports and does not, and what it costs: ``docs/local.md`` ("Step Functions").
"""

from __future__ import annotations

import argparse
import base64
import calendar
import datetime
import enum
import functools
import http.client
import inspect
import json
import logging
import os
import re
import signal
import socket
import string
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from streamer.config import Env

__all__ = [
    "LambdaForwarder",
    "enable_jsonata",
    "enable_sfn_execution",
    "main",
    "make_app",
    "speed_up_dispatch",
    "speed_up_dynamodb_conditions",
    "speed_up_dynamodb_queries",
    "speed_up_dynamodb_responses",
    "speed_up_sfn",
    "speed_up_sfn_paths",
]

log = logging.getLogger("streamer.local.moto")

LISTEN_BACKLOG = 1024
_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/[^/]+/invocations/?$")
#: Step Functions' own Lambda client waits up to this long for a Task (moto's default Task timeout is 60 s,
#: a Task's ``TimeoutSeconds`` is enforced by the interpreter itself).
FORWARD_TIMEOUT_SECONDS = 960.0
#: Threads serving connections (moto's handlers hold the GIL: more would only queue inside Python).
POOL_SIZE = 64
#: Connections the engine's Lambda client keeps to our endpoint (under its pool, streamer.local.lambda_endpoint).
ENGINE_LAMBDA_CONNECTIONS = 32

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "X-Amz-Invocation-Type",
    "X-Amz-Log-Type",
    "X-Amz-Client-Context",
)


def enable_sfn_execution() -> None:
    """Make moto's Step Functions backend the executing interpreter (before any state machine exists)."""
    from moto.core.config import default_user_config

    default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True


def enable_jsonata() -> bool:
    """Replace moto's JSONata stub with ``jsonata-python``. ``False`` when that package is missing."""
    try:
        import jsonata
    except ImportError:
        return False
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

    def evaluate(expression: str) -> Any:
        return jsonata.Jsonata(expression).evaluate(None)

    moto_jsonata._eval_jsonata = evaluate
    return True


def speed_up_sfn(lambda_endpoint: str | None) -> None:
    """Parse each definition once per process; one Lambda client per process, straight to ``lambda_endpoint``.

    moto 5.2.5's ``ExecutionWorker._get_evaluation_entrypoint`` parses the definition (ANTLR, ~60 ms the first
    time, milliseconds after) for every execution; the parsed program keeps no state of its own (an
    execution's state lives in its ``Environment``), so executions of one definition share it. Its
    ``boto_client_for`` builds a boto3 client (~5-10 ms) for every Task and points it at moto itself; ours
    keeps one client per (region, service) with moto's settings (no retries: a Task is invoked once, its
    ``Retry`` is the state machine's), the Lambda service at ``lambda_endpoint``. Idempotent.
    """
    import functools

    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.utils import boto_client as moto_boto_client
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    if getattr(ExecutionWorker, "_streamer_fast", False):
        return

    @functools.lru_cache(maxsize=256)
    def parsed(definition: str) -> Any:
        return AmazonStateLanguageParser.parse(definition)[0]

    def entrypoint(self: Any) -> Any:
        return parsed(self._evaluation_details.state_machine_details.definition)

    original = moto_boto_client.boto_client_for
    lock = threading.Lock()
    clients: dict[tuple[str, str, str | None], Any] = {}

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        from moto.core.models import botocore_stubber

        if botocore_stubber.enabled:  # moto in-process (mock_aws): its stubber answers, nothing to cache
            return original(region, service, state_credentials)
        endpoint = lambda_endpoint if service == "lambda" and lambda_endpoint else None
        key = (region, service, endpoint)
        with lock:
            client = clients.get(key)
            if client is None:
                client = _engine_client(region, service, endpoint)
                clients[key] = client
            return client

    ExecutionWorker._get_evaluation_entrypoint = entrypoint  # type: ignore[method-assign]
    ExecutionWorker._streamer_fast = True  # type: ignore[attr-defined]
    moto_boto_client.boto_client_for = boto_client_for
    # Modules that imported the function by name (every Task kind that calls AWS) get ours too.
    import moto.stepfunctions.parser.asl.parse.preprocessor  # noqa: F401  (imports every Task module)

    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name.startswith("moto.stepfunctions.parser") and getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]


def speed_up_sfn_paths() -> None:
    """moto 5.2.5's ASL interpreter parses a JSONPath (``$.payload``, a ``ResultPath``, every ``.$`` field of
    ``Parameters``) each time a state uses it, and ``jsonpath_ng`` builds a new ply parser for every parse
    (its lexer and LR tables rebuilt from the grammar's docstrings): 28 % of the Step Functions process's CPU
    under 20 concurrent ``echo`` requests (``python -m benchmarks.profile echo``). The parsed path is a tree
    that ``find`` and ``update_or_create`` only read, so each path string's tree is kept (an LRU of 1,024
    per parser: moto uses the extended parser to read and the basic one for ``ResultPath``). A path that does
    not parse raises each time, as before. Idempotent."""
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    for module in (json_path, result_path):
        parse = getattr(module, "parse")  # noqa: B009 - imported there by name, not exported
        if getattr(parse, "_streamer_fast", False):
            continue
        kept = functools.lru_cache(maxsize=1024)(parse)
        kept._streamer_fast = True  # type: ignore[attr-defined]
        kept._streamer_original = parse  # type: ignore[attr-defined]
        setattr(module, "parse", kept)  # noqa: B010


_LETTERS_DIGITS = string.ascii_letters + string.digits


def speed_up_dispatch() -> None:
    """Two listings moto 5.2.5 makes on every request, made once, and its request id drawn at once:

    * a handler class's methods (``inspect.getmembers``), to find the action (``BaseResponse.call_action``):
      the list depends on the class only, so it is computed once per class;
    * moto's own package directory (``backends.list_of_moto_modules``: an ``os.listdir`` and ~170
      ``os.path.isdir`` calls), which the server's dispatcher reads to route a request whose ``Host`` is
      not a service's domain — every request to a local endpoint (``127.0.0.1:PORT``); 9 % of the DynamoDB
      process's CPU under a flood of ``$connect``s. The installed package does not change while it runs;
    * the 52-character ``x-amzn-RequestId`` of every response (``MotoRandom.get_random_string``) was 52
      ``random.choice`` calls, ~5 % of a conditional ``UpdateItem``'s CPU: now one ``choices`` of the same
      generator (moto's seedable one), over the same alphabet.

    Idempotent."""
    from moto import backends
    from moto.core import responses

    original = getattr(responses, "method_names_from_class")  # noqa: B009 - imported there, not exported
    if getattr(original, "cache_info", None) is None:
        setattr(responses, "method_names_from_class", functools.lru_cache(maxsize=None)(original))  # noqa: B010
    from moto.moto_api._internal.moto_random import MotoRandom

    random_string = MotoRandom.get_random_string
    if not getattr(random_string, "_streamer_fast", False):

        def get_random_string(
            self: Any, length: int = 20, include_digits: bool = True, lower_case: bool = False
        ) -> str:
            pool = _LETTERS_DIGITS if include_digits else string.ascii_letters
            value = "".join(self.choices(pool, k=length))
            return value.lower() if lower_case else value

        get_random_string._streamer_fast = True  # type: ignore[attr-defined]
        get_random_string._streamer_original = random_string  # type: ignore[attr-defined]
        MotoRandom.get_random_string = get_random_string  # type: ignore[method-assign]
    listing = backends.list_of_moto_modules
    if not getattr(listing, "_streamer_fast", False):
        modules = tuple(listing())

        def list_of_moto_modules() -> tuple[str, ...]:
            return modules

        list_of_moto_modules._streamer_fast = True  # type: ignore[attr-defined]
        list_of_moto_modules._streamer_original = listing  # type: ignore[attr-defined]
        backends.list_of_moto_modules = list_of_moto_modules


def speed_up_dynamodb_conditions() -> None:
    """moto 5.2.5 lexes a condition expression (``ConditionExpression``, ``FilterExpression``) again on every
    call (six ``re.compile`` look-ups and matches per token), 9 % of the DynamoDB process's CPU under a
    flood of ``$connect``s. The tokens depend on the expression string alone
    (names and values are looked up by the steps after the lexer), so each string's tokens are kept (an LRU
    of 512) and every call gets its own queue of them: the parser consumes the queue, never the tokens
    (immutable named tuples whose ``children`` no step changes). A string that does not lex raises each
    time, as before. Idempotent."""
    from collections import deque

    from moto.dynamodb.comparisons import ConditionExpressionParser

    original = ConditionExpressionParser.__dict__["_lex_condition_expression"]
    if getattr(original, "_streamer_fast", False):
        return

    @functools.lru_cache(maxsize=512)
    def tokens(expression: str) -> tuple[Any, ...]:
        return tuple(original(ConditionExpressionParser(expression, None, None)))

    def _lex_condition_expression(self: Any) -> Any:
        if not isinstance(self.condition_expression, str):
            return original(self)
        return deque(tokens(self.condition_expression))

    _lex_condition_expression._streamer_fast = True  # type: ignore[attr-defined]
    _lex_condition_expression._streamer_original = original  # type: ignore[attr-defined]
    ConditionExpressionParser._lex_condition_expression = _lex_condition_expression  # type: ignore[method-assign]


class _QueryView:
    """A moto ``Table`` as ``Table.query`` sees it, whose ``all_items`` holds only the items that can match:
    the partition's (a table query) or those whose index hash key attributes match (an index query). Their
    order does not matter: moto's query sorts them by the range key (a table query: unique in a partition) or
    by the index's keys and then the table's (an index query: unique), which is why ``all_items`` sorting the
    whole table is wasted. Everything else is the table's."""

    def __init__(self, table: Any, hash_key: Any, conditions: list[tuple[str, Any]] | None) -> None:
        self._table = table
        self._hash_key = hash_key
        self._conditions = conditions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        table = self._table
        if self._conditions is None:  # the table's own key: one partition, no scan (.get: items is a defaultdict)
            found = table.items.get(self._hash_key)
            if found is None:
                return []
            candidates = list(found.values()) if table.range_key_attr else [found]
        else:
            # moto's own test (``not value or value != expected``), with strings and binaries compared as
            # they are (their cast value is the value) instead of through DynamoType's cast on every item.
            plain = [(a, e.type, e.value) for a, e in self._conditions if e.type in ("S", "B")]
            other = [(a, e) for a, e in self._conditions if e.type not in ("S", "B")]
            candidates = []
            for hash_set in table.items.values():
                for item in hash_set.values() if table.range_key_attr else [hash_set]:
                    attrs = item.attrs
                    if all(
                        (v := attrs.get(a)) is not None and v.type == t and v.value == x for a, t, x in plain
                    ) and all((v := attrs.get(a)) and v == e for a, e in other):
                        candidates.append(item)
        return candidates  # no sort: moto's query sorts what matches by the index's and the table's keys


def speed_up_dynamodb_queries() -> None:
    """moto 5.2.5's ``Query`` sorts every item of the table (``Table.all_items``) and then keeps the
    partition's, so each Query costs O(n log n) in the table's size: on the events table, which grows with
    every request, and on the connections table's ``by_user`` index, read for every push. DynamoDB reads one
    partition (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Query.html). Here a query
    on the table reads its partition only, and one on an index filters on the index's hash key before the
    sort; moto's query does the rest unchanged, so the results, their order and the pages are the same
    (``tests/functional/test_moto_speedups.py`` compares both on the same tables). Idempotent."""
    from moto.dynamodb.models.table import Table

    original: Any = Table.query
    if getattr(original, "_streamer_fast", False):
        return

    signature = inspect.signature(original)

    @functools.wraps(original)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, hash_key, *args, **kwargs).arguments
        index_name = bound.get("index_name")
        conditions = bound.get("hash_key_conditions")
        if index_name:
            if not conditions:
                return original(self, hash_key, *args, **kwargs)
            view = _QueryView(self, hash_key, list(conditions))
        elif hash_key is None:
            return original(self, hash_key, *args, **kwargs)
        else:
            view = _QueryView(self, hash_key, None)
        return original(view, hash_key, *args, **kwargs)

    query._streamer_fast = True  # type: ignore[attr-defined]
    Table.query = query  # type: ignore[method-assign]


def speed_up_dynamodb_updates() -> None:
    """moto 5.2.5 parses an ``UpdateItem``'s update expression twice per call (its handler, for the names and
    values the expression uses; its backend, to validate and apply it) — the same few expressions every time.
    Here the parse of an expression string is kept (``UpdateExpressionParser.make``, an LRU of 512
    expressions). Safe because nothing changes a parsed tree: the handler only reads it (``find_clauses``),
    and every validator deep-copies it before its processors rewrite the copy
    (``moto.dynamodb.parsing.validators.Validator``). A string that does not parse raises each time, as
    before (errors are not kept). Idempotent."""
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    original = UpdateExpressionParser.__dict__["make"]
    if getattr(original.__func__, "_streamer_fast", False):
        return
    parse = functools.lru_cache(maxsize=512)(original.__func__)

    def make(cls: Any, expression_str: str) -> Any:
        return parse(cls, expression_str)

    make._streamer_fast = True  # type: ignore[attr-defined]
    make._streamer_original = original  # type: ignore[attr-defined]
    UpdateExpressionParser.make = classmethod(make)


#: How many parsed update expressions :func:`speed_up_dynamodb_validation` keeps a copy of (as the parse LRU).
_KEPT_UPDATE_TREES = 512


def speed_up_dynamodb_validation() -> None:
    """moto 5.2.5 validates an ``UpdateItem``'s parsed update expression on every call
    (``moto.dynamodb.parsing.validators.UpdateExpressionValidator``): it deep-copies the tree, then ten
    processors each walk the whole copy. Of one ``UpdateItem``'s CPU in moto, the deep copy is ~14 % and the
    walks ~40 % (``cProfile`` of the WSGI app, our ``last_seq`` claim shape). Two of those costs depend on the
    expression alone, and :func:`speed_up_dynamodb_updates` hands the validator the same kept tree for the same
    expression string:

    * the copy: a kept tree's copy is made from its pickle, taken once (``pickle.loads`` of plain node objects
      builds what ``copy.deepcopy`` builds, several times faster);
    * the three checks that read nothing but the tree, the attribute names and the table's key attributes
      (``ActionCountValidator``, ``OverlappingPathsValidator``, ``UpdateHashRangeKeyValidator``: one clause per
      action, no overlapping paths, no key attribute updated) run once per (tree, names, key attributes); once
      they have passed, later calls skip them. A check that raises is not remembered: it raises every time.

    The processors that read the values and the item (and rewrite the copy) run every time, as before. A tree
    that is not kept (moto's own parse, e.g. with :func:`speed_up_dynamodb_updates` off) is copied and checked
    as moto does. Idempotent."""
    import collections
    import copy
    import pickle

    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    cls = validators.UpdateExpressionValidator
    original_init = cls.__dict__.get("__init__", validators.Validator.__init__)
    if getattr(original_init, "_streamer_fast", False):
        return
    original_validate = cls.__dict__.get("validate", validators.Validator.validate)
    syntax = (
        validators.ActionCountValidator,
        validators.OverlappingPathsValidator,
        validators.UpdateHashRangeKeyValidator,
    )
    # id(tree) -> (tree, its pickle, the (names, key attributes) it passed the syntax checks with). The entry
    # holds the tree, so its id cannot be reused while it is here; an LRU of the parse cache's size.
    kept: collections.OrderedDict[int, tuple[Any, bytes, set[Any]]] = collections.OrderedDict()
    lock = threading.Lock()

    def entry(tree: Any) -> tuple[Any, bytes, set[Any]] | None:
        make = UpdateExpressionParser.__dict__["make"].__func__
        if not getattr(make, "_streamer_fast", False):
            return None  # moto's own parse: a new tree per call, nothing to keep
        with lock:
            hit = kept.get(id(tree))
            if hit is not None and hit[0] is tree:
                kept.move_to_end(id(tree))
                return hit
            hit = (tree, pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL), set())
            kept[id(tree)] = hit
            while len(kept) > _KEPT_UPDATE_TREES:
                kept.popitem(last=False)
            return hit

    def __init__(  # moto passes all but the first argument by keyword: the same names
        self: Any,
        expression: Any,
        expression_attribute_names: Any,
        expression_attribute_values: Any,
        item: Any,
        table: Any,
    ) -> None:
        names = expression_attribute_names
        self.expression_attribute_names = names
        self.expression_attribute_values = expression_attribute_values
        self.item = item
        self.table = table
        self.processors = self.get_ast_processors()
        hit = entry(expression)
        if hit is None:
            self.node_to_validate = copy.deepcopy(expression)
            self._streamer_checked = None
            return
        self.node_to_validate = pickle.loads(hit[1])  # noqa: S301 - bytes this process pickled from its own tree
        key = (frozenset((names or {}).items()), tuple(table.table_key_attrs))
        self._streamer_checked = (hit[2], key)

    def validate(self: Any) -> Any:
        checked = self._streamer_checked
        passed = checked is not None and checked[1] in checked[0]
        node = self.node_to_validate
        for i, processor in enumerate(self.processors):
            if passed and isinstance(processor, syntax):
                continue
            node = processor.traverse(node)
            if checked is not None and i == len(syntax) - 1 and not passed:
                checked[0].add(checked[1])  # the syntax checks are the first three: all passed
        return node

    probe: Any = _ProcessorsProbe()
    if [type(p) for p in cls.get_ast_processors(probe)][: len(syntax)] != list(syntax):
        return  # another moto: its processors are not what this patch knows; leave them as they are
    fn: Any
    for fn, was in ((__init__, original_init), (validate, original_validate)):
        fn._streamer_fast = True
        fn._streamer_original = was
    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.validate = validate  # type: ignore[method-assign]
    _keep_processing_maps()


def _keep_processing_maps() -> None:
    """moto's ``DepthFirstTraverser`` asks its processor for its map of node types to handlers
    (``_processing_map()``, a new dict of bound methods) twice for every node of every walk
    (``nodes_to_be_processed``, ``process``). Every processor's map is a literal of class keys and its own
    methods, so each instance's map is built once and kept on it."""
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser  # type: ignore[attr-defined]

    def kept(self: Any) -> tuple[dict[Any, Any], tuple[Any, ...]]:
        got: tuple[dict[Any, Any], tuple[Any, ...]] | None = self.__dict__.get("_streamer_map")
        if got is None:
            processing = self._processing_map()
            got = self.__dict__["_streamer_map"] = (processing, tuple(processing))
        return got

    def nodes_to_be_processed(self: Any) -> tuple[Any, ...]:
        return kept(self)[1]

    def process(self: Any, node: Any) -> Any:
        for class_key, processor in kept(self)[0].items():
            if isinstance(node, class_key):
                return processor(node)
        return None

    fn: Any
    for name, fn in (("nodes_to_be_processed", nodes_to_be_processed), ("process", process)):
        fn._streamer_fast = True
        fn._streamer_original = DepthFirstTraverser.__dict__[name]
        setattr(DepthFirstTraverser, name, fn)


class _ProcessorsProbe:
    """What ``UpdateExpressionValidator.get_ast_processors`` reads, to list its processors without a call."""

    expression_attribute_names: dict[str, str] = {}
    expression_attribute_values: dict[str, Any] = {}
    item = None

    class table:  # stands for the attribute moto reads
        table_key_attrs: list[str] = []
        attr: list[Any] = []
        attribute_keys: list[str] = []


#: DynamoDB's item operations: their results are plain JSON data (items, keys, counts, capacity).
_DYNAMODB_ITEM_OPERATIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
#: The operations answered directly, per service: DynamoDB's item operations, the stream poller's
#: ``GetRecords`` (the records: items, and one timestamp each) and ``GetShardIterator``, and Step Functions'
#: ``ListExecutions`` (names, ARNs, a status, dates; the local EventBridge poller and the console ask it).
_FAST = {
    "dynamodb": _DYNAMODB_ITEM_OPERATIONS,
    "dynamodbstreams": frozenset({"GetRecords", "GetShardIterator"}),
    "stepfunctions": frozenset({"ListExecutions"}),
}


#: Set by ``speed_up_dynamodb_responses(check=True)``: render both ways and compare.
_RESPONSE_CHECK = threading.Event()


#: What :func:`_plain` answers for a result moto's serializer has to interpret (an object, a date, a Decimal).
_UNPLAIN: Any = object()


def _plain(value: Any) -> Any:
    """``value`` as moto's JSON serializer writes a DynamoDB item operation's result: members that are None
    left out, binaries base64-encoded, a date as epoch seconds; :data:`_UNPLAIN` when it holds anything but
    JSON data, bytes, dates and None."""
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if v is not None:
                if (p := _plain(v)) is _UNPLAIN:
                    return _UNPLAIN
                out[k] = p
        return out
    if kind is list:
        items = [_plain(v) for v in value]
        return _UNPLAIN if any(i is _UNPLAIN for i in items) else items
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value  # None: in a list (a member that is None was left out above)
    if kind is bytes:
        return base64.b64encode(value).decode("ascii")
    if kind is datetime.datetime:  # a stream record's ApproximateCreationDateTime: the JSON protocols' epoch
        # seconds, truncated to milliseconds, as moto's serializer writes it (TimestampSerializer)
        whole = calendar.timegm(value.timetuple())
        return whole + (value.microsecond // 1000) / 1000.0 if value.microsecond else whole
    if isinstance(value, enum.Enum) and type(value.value) is str:  # an execution's status
        return value.value
    return _UNPLAIN


def speed_up_dynamodb_responses(*, check: bool = False) -> None:
    """moto 5.2.5 renders every response with its generic, model-driven serializer, which walks the output
    shape and looks each member up under several spellings: for an item operation that is most of moto's own
    time after the operation itself (a Query answering 10 items: ~400 lookups). DynamoDB's item operations
    answer plain JSON, and the result moto builds is already that JSON's data, so for them the result's
    members become the body directly (:func:`_plain`: ``None`` members left out, binaries base64 as the
    serializer writes them), provided its top-level members are all in the operation's output shape; any
    other result (an error, an object, a member the shape does not name) goes through moto's serializer.
    The same holds for DynamoDB Streams' ``GetRecords`` (the stream poller asks it every 0.1 s per shard;
    its records are items plus one date, written as epoch seconds) and ``GetShardIterator``.

    ``check=True`` renders both and raises on any difference, from then on in this process: the functional
    tests run with it, so every item operation they make compares the two
    (``tests/functional/test_moto_speedups.py`` covers the shapes they do not). Idempotent.
    """
    from moto.core.responses import ActionResult

    if check:
        _RESPONSE_CHECK.set()
    original = ActionResult.execute_result
    if getattr(original, "_streamer_fast", False):
        return
    members: dict[str, frozenset[str]] = {}

    @functools.wraps(original)
    def execute_result(self: Any, context: Any) -> Any:
        operation = context.operation_model
        result = self.result
        if (
            type(result) is dict
            and operation.name in _FAST.get(operation.service_model.service_name, ())
            and type(self).execute_result is execute_result  # not a result class with its own rendering
            and not getattr(context.response, "RESPONSE_KEY_PATH_TO_TRANSFORMER", None)
        ):
            names = members.get(operation.name)
            if names is None:
                names = members[operation.name] = frozenset(operation.output_shape.members)
            if names.issuperset(result):
                plain = _plain(result)
                if plain is not _UNPLAIN:
                    body = json.dumps(plain)
                    status = operation.http.get("responseCode", 200)
                    version = operation.service_model.metadata.get("jsonVersion", "1.0")
                    fast = status, {"Content-Type": f"application/x-amz-json-{version}"}, body
                    if _RESPONSE_CHECK.is_set():
                        slow = original(self, context)
                        if (slow[0], slow[1], json.loads(slow[2])) != (fast[0], fast[1], json.loads(body)):
                            raise AssertionError(f"{operation.name}: fast {fast!r} != moto's {slow!r}")
                    return fast
        return original(self, context)

    execute_result._streamer_fast = True  # type: ignore[attr-defined]
    ActionResult.execute_result = execute_result  # type: ignore[method-assign]


def _engine_client(region: str, service: str, endpoint: str | None) -> Any:
    """A client like moto's ``boto_client_for`` builds, at ``endpoint`` (default: this moto server)."""
    import boto3
    from botocore.config import Config
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        aws_access_key_id="ak",
        aws_secret_access_key="sk",
        region_name=region,
        endpoint_url=endpoint or f"http://localhost:{moto_server_port()}",
        config=Config(
            parameter_validation=False,
            retries={"max_attempts": 0, "total_max_attempts": 1},
            connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            max_pool_connections=ENGINE_LAMBDA_CONNECTIONS,
        ),
    )


class LambdaForwarder:
    """WSGI middleware: Lambda Invoke requests go to ``lambda_endpoint``, everything else to ``app``."""

    def __init__(self, app: WSGIApp, lambda_endpoint: str, timeout: float = FORWARD_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(lambda_endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"lambda endpoint must be an http:// URL, got {lambda_endpoint!r}")
        self.app = app
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") == "POST" and _INVOKE_PATH.match(path):
            return self._forward(environ, start_response)
        return self.app(environ, start_response)

    def _forward(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {}
        for name in _FORWARDED_REQUEST_HEADERS:
            value = environ.get("HTTP_" + name.upper().replace("-", "_")) or (
                environ.get("CONTENT_TYPE") if name == "Content-Type" else None
            )
            if value:
                headers[name] = value
        target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or path_with_query(environ)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status = f"{resp.status} {resp.reason}"
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
        except OSError as exc:
            log.error("lambda endpoint unreachable for %s: %s", path_with_query(environ), exc)
            data = (
                b'{"Type":"Service","message":"local Lambda endpoint unreachable: '
                + str(exc).replace('"', "'").encode()
                + b'"}'
            )
            status = "502 Bad Gateway"
            out_headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ServiceException")]
        finally:
            conn.close()
        out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
        out_headers.append(("Content-Length", str(len(data))))
        start_response(status, out_headers)
        return [data]


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "server", "date"})


def path_with_query(environ: dict[str, Any]) -> str:
    from urllib.parse import quote

    path = quote(environ.get("PATH_INFO", ""), safe="/:$")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def make_app(lambda_endpoint: str | None) -> WSGIApp:
    """moto's dispatcher app, Step Functions execution on, Lambda invocations forwarded when asked."""
    enable_sfn_execution()
    enable_jsonata()
    speed_up_sfn(lambda_endpoint)
    speed_up_sfn_paths()
    speed_up_dispatch()
    speed_up_dynamodb_queries()
    speed_up_dynamodb_updates()
    speed_up_dynamodb_validation()
    speed_up_dynamodb_conditions()
    speed_up_dynamodb_responses()
    from streamer.local.moto_atomic import reliable_stop, serialize_dynamodb, unique_execution_names

    serialize_dynamodb()  # single-item writes atomic, as DynamoDB's are (streamer.aws.store relies on it)
    reliable_stop()  # a StopExecution right after StartExecution stops it (a cancel racing the start)
    unique_execution_names()  # one execution name, one execution (concurrent stream workers)
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app: WSGIApp = DomainDispatcherApplication(create_backend_app)
    if lambda_endpoint:
        app = LambdaForwarder(app, lambda_endpoint)
    return app


def _pooled_server(host: str, port: int, app: WSGIApp, fd: int) -> Any:
    """werkzeug's server with moto's request handler, connections served by a bounded pool."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import BaseWSGIServer

    from streamer.local.serving import PooledMixIn, YieldingHandlerMixIn

    class Handler(YieldingHandlerMixIn, MotoRequestHandler):
        pass

    class Server(PooledMixIn, BaseWSGIServer):
        multithread = True  # WSGI's wsgi.multithread; also makes werkzeug speak HTTP/1.1 (keep-alive)
        pool_size = POOL_SIZE
        request_queue_size = LISTEN_BACKLOG

    return Server(host, port, app, handler=Handler, fd=fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamer.local.moto_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (printed when ready)")
    parser.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket")
    parser.add_argument("--lambda-endpoint", default=None, help="URL of the Lambda Invoke endpoint")
    parser.add_argument("--log-level", default=os.environ.get(Env.LOG_LEVEL, "INFO"))
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (parent gone)")
    parser.add_argument(
        "--role",
        default="",
        help="what `streamer local` serves here (dynamodb, stepfunctions): a label for process lists",
    )
    args = parser.parse_args(argv)
    from streamer.local._logging import configure_logging

    configure_logging("moto", args.log_level, args.log_format)

    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.create_server((args.host, args.port), backlog=LISTEN_BACKLOG)
    host, port = sock.getsockname()[:2]
    # Read by moto's interpreter whenever it builds a client (server mode): must name the port we serve.
    os.environ["MOTO_PORT"] = str(port)

    app = make_app(args.lambda_endpoint)
    server = _pooled_server(host, port, app, sock.fileno())

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.watch_stdin:
        from streamer.local.lambda_endpoint import watch_stdin

        watch_stdin(lambda: stop(0, None))
    from streamer.local.heap import settle_heap

    settle_heap()  # moto's imports frozen out of the collector's way (streamer.local.heap)
    print(f"moto server ready http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
