"""`likewise serve` driven by the clients people use: OpenAI's Python SDK, LangChain's
OpenAIEmbeddings, LlamaIndex's OpenAI-like embedder, text-embeddings-inference's shapes over plain
HTTP, and the official MCP Python SDK (stdio and streamable HTTP). Every vector must be the vector
of `likewise embed`; every refusal must be the client's own exception with a message that says
what to do. Servers listen on 127.0.0.1 only.
"""

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

from test_likewise import BIN, MODEL, ROOT, RAFAH, cli

TEXTS = [
    RAFAH,
    "Stocks rallied in Tokyo as the yen weakened",
    "Ελληνικά: ο Μπλίνκεν μίλησε για τη Ράφα",
    "short",
]
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `likewise serve` on a loopback port, stopped when done."""

    def __init__(self, store, *args):
        self.port = free_port()
        env = dict(os.environ, LIKEWISE_INDEX=str(store), LIKEWISE_MODEL=str(MODEL))
        env.pop("RAYON_NUM_THREADS", None)
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--addr", f"127.0.0.1:{self.port}", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.process.stdout.readline()  # the address, printed once it listens
        assert line.startswith(f"http://127.0.0.1:{self.port}"), line
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = tmp_path_factory.mktemp("clients") / "store"
    cli(store, "index", str(ROOT / "seeds"))
    return store


@pytest.fixture(scope="module")
def server(store):
    s = Server(store)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference(store):
    """`likewise embed`'s vectors of TEXTS: what every client must get back."""
    out = subprocess.run(
        [str(BIN), "--model", str(MODEL), "embed", "-"], input="\n".join(TEXTS) + "\n",
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return np.array([json.loads(line)["embedding"] for line in out.stdout.splitlines()], dtype=np.float32)


def assert_same_vectors(got, reference):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == reference.shape
    for g, r in zip(got, reference):
        cosine = float(np.dot(g, r) / (np.linalg.norm(g) * np.linalg.norm(r)))
        assert cosine >= 0.99999, cosine


def post(server, path, body, token=None):
    request = urllib.request.Request(
        server.base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(server, path):
    with urllib.request.urlopen(server.base + path, timeout=60) as r:
        return json.loads(r.read())


# ---- OpenAI's SDK ---------------------------------------------------------------------------

def test_the_openai_sdk_gets_the_vectors_of_likewise_embed(server, reference):
    import openai

    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused-on-loopback")
    # The SDK asks for base64 unless told otherwise, and decodes it.
    raw = client.embeddings.with_raw_response.create(input=TEXTS, model="all-MiniLM-L6-v2")
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    answer = raw.parse()
    assert answer.model == MODEL_NAME
    assert [d.index for d in answer.data] == list(range(len(TEXTS)))
    assert_same_vectors([d.embedding for d in answer.data], reference)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(TEXTS) * 2

    floats = client.embeddings.create(input=TEXTS, model=MODEL_NAME, encoding_format="float")
    assert_same_vectors([d.embedding for d in floats.data], reference)
    one = client.embeddings.create(input=TEXTS[0], model="all-MiniLM-L6-v2", encoding_format="float")
    assert_same_vectors([one.data[0].embedding], reference[:1])
    # Asked for base64 explicitly, the SDK hands the string over: little-endian float32.
    b64 = client.embeddings.create(input=TEXTS[:2], model="all-MiniLM-L6-v2", encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in b64.data]
    assert_same_vectors(decoded, reference[:2])

    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]


def test_concurrent_calls_share_batches_and_each_gets_its_own_vectors(server, reference):
    """Eight clients at once, each with its own texts, and search passages beside them: the
    server gathers them into shared batches, and every answer must still be its caller's."""
    import threading

    import openai

    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused-on-loopback")
    answers, errors = {}, []

    def embed(i):
        try:
            order = [TEXTS[(i + j) % len(TEXTS)] for j in range(len(TEXTS))]
            got = client.embeddings.create(input=order, model="all-MiniLM-L6-v2", encoding_format="float")
            answers[i] = (order, [d.embedding for d in got.data])
        except Exception as e:  # reported below, with the others
            errors.append(e)

    def search():
        status, _ = post(server, "/api/query", {"text": RAFAH, "k": 3})
        if status != 200:
            errors.append(status)

    threads = [threading.Thread(target=embed, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    by_text = dict(zip(TEXTS, reference))
    for order, vectors in answers.values():
        assert_same_vectors(vectors, np.array([by_text[t] for t in order]))


def test_the_openai_sdk_gets_clear_errors(server):
    import openai

    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused-on-loopback", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(input="x", model="text-embedding-3-small")
    assert e.value.code == "model_not_found" and "all-MiniLM-L6-v2" in e.value.message
    # Token ids, as LangChain sends them by default: refused, with how to send text.
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=[[9906, 1917]], model="all-MiniLM-L6-v2")
    assert "check_embedding_ctx_length=False" in e.value.message and e.value.param == "input"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=[1, 2, 3], model="all-MiniLM-L6-v2")
    assert "token ids" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input="x", model="all-MiniLM-L6-v2", dimensions=128)
    assert "384" in e.value.message and e.value.param == "dimensions"
    client.embeddings.create(input="x", model="all-MiniLM-L6-v2", dimensions=384)  # its own: fine
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=["fine", "  "], model="all-MiniLM-L6-v2")
    assert "input[1]" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=["x"] * 2049, model="all-MiniLM-L6-v2")
    assert "2048" in e.value.message


def test_a_server_with_a_token_needs_it_from_openai_clients(store, reference):
    import openai

    token = "client-test-token-42"
    s = Server(store, "--token", token)
    try:
        wrong = openai.OpenAI(base_url=s.base + "/v1", api_key="not-the-token", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.embeddings.create(input="x", model="all-MiniLM-L6-v2")
        right = openai.OpenAI(base_url=s.base + "/v1", api_key=token)
        answer = right.embeddings.create(input=TEXTS[:1], model="all-MiniLM-L6-v2")
        assert_same_vectors([answer.data[0].embedding], reference[:1])
    finally:
        s.stop()


# ---- LangChain and LlamaIndex -----------------------------------------------------------------

def test_langchain_openai_embeddings(server, reference):
    from langchain_openai import OpenAIEmbeddings

    # The documented way to point it at a server that is not OpenAI's: send text, not tiktoken ids.
    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2", base_url=server.base + "/v1", api_key="unused",
        check_embedding_ctx_length=False,
    )
    assert_same_vectors(embeddings.embed_documents(TEXTS), reference)
    assert_same_vectors([embeddings.embed_query(TEXTS[0])], reference[:1])


def test_llama_index_openai_like_embedding(server, reference):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embedding = OpenAILikeEmbedding(model_name="all-MiniLM-L6-v2", api_base=server.base + "/v1", api_key="unused")
    assert_same_vectors(embedding.get_text_embedding_batch(TEXTS), reference)
    assert_same_vectors([embedding.get_query_embedding(TEXTS[1])], reference[1:2])


# ---- text-embeddings-inference's shapes ----------------------------------------------------------

def test_tei_embed_and_similarity(server, reference):
    status, vectors = post(server, "/embed", {"inputs": TEXTS})
    assert status == 200
    assert_same_vectors(vectors, reference)
    status, one = post(server, "/embed", {"inputs": TEXTS[0], "normalize": False})
    assert status == 200 and len(one) == 1
    assert_same_vectors(one, reference[:1])

    status, scores = post(server, "/similarity", {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}})
    assert status == 200
    expected = [float(np.dot(reference[0], r)) for r in reference[1:]]
    assert np.allclose(scores, expected, atol=1e-5)

    # Past the model's window: refused unless `truncate`, then cut as `likewise embed` cuts.
    long_text = "Blinken spoke in Cairo about Rafah and the ground operation. " * 60
    status, error = post(server, "/embed", {"inputs": [long_text]})
    assert status == 422 and error["error_type"] == "Validation" and "truncate" in error["error"]
    status, cut = post(server, "/embed", {"inputs": [long_text], "truncate": True})
    assert status == 200
    out = subprocess.run([str(BIN), "--model", str(MODEL), "embed", "-"], input=long_text + "\n",
                         capture_output=True, text=True, check=True)
    assert_same_vectors(cut, np.array([json.loads(out.stdout)["embedding"]], dtype=np.float32))

    status, error = post(server, "/embed", {"inputs": []})
    assert status == 422 and "empty" in error["error"]
    status, error = post(server, "/similarity", {"inputs": {"source_sentence": "x", "sentences": []}})
    assert status == 422
    status, error = post(server, "/embed", {"inputs": ["x"] * 2049})
    assert status == 413 and error["error_type"] == "Validation"


# ---- MCP -----------------------------------------------------------------------------------------

def keys_of(result):
    return [hit["key"].split("/")[-1][:3] for hit in json.loads(result.content[0].text)["hits"]]


def test_an_mcp_client_over_stdio_searches_the_seeds(store):
    from mcp import Client, StdioServerParameters

    env = dict(os.environ, LIKEWISE_MODEL=str(MODEL))
    params = StdioServerParameters(command=str(BIN), args=["--index", str(store), "mcp"], env=env, cwd=str(ROOT))

    async def session():
        async with Client(params) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"search", "article", "compare", "stories", "story_timeline", "duplicates", "info"}
            assert "quotes" in tools["search"].description and "text" in tools["search"].input_schema["properties"]
            found = await client.call_tool("search", {"text": RAFAH, "k": 3})
            assert not found.is_error
            assert keys_of(found) == ["003", "004", "002"]  # the Rafah articles
            names = await client.call_tool("search", {"text": "Shoukry", "mode": "lexical"})
            assert keys_of(names) == ["003"]
            article = json.loads((await client.call_tool("article", {"key": "003"})).content[0].text)
            assert "Rafah" in article["title"] and len(article["paragraphs"]) > 3
            timeline = json.loads((await client.call_tool("story_timeline", {"key": "004"})).content[0].text)
            assert sorted(a["key"].split("/")[-1][:3] for a in timeline["articles"]) == ["002", "003", "004"]
            # Stories by the ids the store keeps (the same as `likewise stories`), a timeline by id.
            stories = json.loads((await client.call_tool("stories", {})).content[0].text)
            assert stories["kept_ids"] and sorted(st["size"] for st in stories["stories"]) == [2, 3], stories
            rafah = next(st for st in stories["stories"] if st["size"] == 3)
            assert timeline["kept_ids"] is True and timeline["story"]["id"] == rafah["id"]
            by_id = json.loads((await client.call_tool("story_timeline", {"id": rafah["id"]})).content[0].text)
            assert by_id["articles"] == timeline["articles"]
            neither = await client.call_tool("story_timeline", {})
            assert neither.is_error and "id" in neither.content[0].text
            compared = json.loads((await client.call_tool("compare", {"a": "003", "b": "004"})).content[0].text)
            assert compared["matches"]
            missing = await client.call_tool("article", {"key": "no-such-article"})
            assert missing.is_error and "no-such-article" in missing.content[0].text
            bad = await client.call_tool("search", {"text": "Rafah", "since": "2024-13-45"})
            assert bad.is_error and "calendar" in bad.content[0].text

    asyncio.run(session())


def test_mcp_writes_only_where_allowed(store, tmp_path):
    from mcp import Client, StdioServerParameters

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    env = dict(os.environ, LIKEWISE_MODEL=str(MODEL))
    params = StdioServerParameters(command=str(BIN), args=["--index", str(copy), "mcp", "--allow-index"], env=env)

    async def session():
        async with Client(params) as client:
            assert "add_articles" in {t.name for t in (await client.list_tools()).tools}
            added = await client.call_tool("add_articles", {"articles": [{
                "id": "wire-1", "title": "Floods in Valencia",
                "text": "Floods swept through Valencia after a month of rain fell in eight hours.",
                "date": "2024-10-29",
            }]})
            assert not added.is_error, added.content[0].text
            assert json.loads(added.content[0].text)["report"]["articles_new"] == 1
            found = await client.call_tool("search", {"text": "Valencia floods", "k": 1})
            assert json.loads(found.content[0].text)["hits"][0]["key"] == "wire-1"

    asyncio.run(session())


def test_an_mcp_client_over_http_reaches_the_same_tools(server):
    from mcp import Client

    async def session():
        async with Client(server.base + "/mcp") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert "search" in tools and "add_articles" not in tools  # read-only server
            found = await client.call_tool("search", {"text": "Herzog", "k": 1})
            assert keys_of(found) == ["000"]

    asyncio.run(session())


# ---- the OpenAPI document ------------------------------------------------------------------------

def test_the_openapi_document_is_valid_and_describes_real_answers(server):
    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    doc = get(server, "/api/openapi.json")
    validate(doc)  # a valid OpenAPI 3.1 document
    # Its schemas are JSON Schema 2020-12 (OpenAPI 3.1): real answers are checked against them.
    registry = Registry().with_resource("urn:likewise", Resource(contents=doc, specification=DRAFT202012))

    def check(instance, schema_name):
        schema = {"$ref": f"urn:likewise#/components/schemas/{schema_name}"}
        errors = list(Draft202012Validator(schema, registry=registry).iter_errors(instance))
        assert not errors, f"{schema_name}: {errors[0].message} at {list(errors[0].absolute_path)}"

    status, answer = post(server, "/api/query", {"text": RAFAH, "k": 3})
    assert status == 200
    check(answer, "QueryResult")
    check(get(server, "/api/info"), "InfoResult")
    status, answer = post(server, "/v1/embeddings", {"input": ["a", "b"], "model": "all-MiniLM-L6-v2"})
    check(answer, "OpenAiResponse")
    status, answer = post(server, "/v1/embeddings", {"input": "a", "model": "nope"})
    assert status == 404
    check(answer, "OpenAiErrorBody")
    status, answer = post(server, "/api/query", {"text": ""})
    assert status == 400
    check(answer, "ErrorBody")


# ---- the documentation's curl examples --------------------------------------------------------

def test_the_curl_examples_of_docs_server_md_run_as_written(tmp_path):
    """Every `curl` line of docs/server.md, run by a shell against servers started as its
    comments say (plain, with --token, with --allow-index), on a store made as the README makes
    it (`likewise index seeds/`): each must answer JSON that is not an error."""
    import re

    shutil.copytree(ROOT / "seeds", tmp_path / "seeds")
    env = dict(os.environ, LIKEWISE_MODEL=str(MODEL))
    env.pop("RAYON_NUM_THREADS", None)
    subprocess.run([str(BIN), "index", "seeds/"], cwd=tmp_path, env=env, check=True, capture_output=True)
    (tmp_path / "new-articles.jsonl").write_text(
        json.dumps({"id": "wire-9", "title": "Floods in Valencia", "text": "Floods swept through Valencia."}) + "\n"
    )
    page = (ROOT / "docs" / "server.md").read_text()
    lines = [line for block in re.findall(r"```sh\n(.*?)```", page, re.S) for line in block.splitlines()
             if line.startswith("curl ")]
    assert len(lines) >= 10, lines
    token = "docs-example-token"
    servers = {
        "plain": Server(tmp_path / ".likewise"),
        "token": Server(tmp_path / ".likewise", "--token", token),
    }
    shutil.copytree(tmp_path / ".likewise", tmp_path / "writable")
    servers["index"] = Server(tmp_path / "writable", "--allow-index")
    try:
        for line in lines:
            kind = "token" if "--token" in line else "index" if "--allow-index" in line else "plain"
            address = f"127.0.0.1:{servers[kind].port}"
            command = re.sub(r"\b(localhost|host):7700", address, line)
            out = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                                 env=dict(os.environ, TOKEN=token), timeout=120)
            assert out.returncode == 0, (line, out.stderr)
            answer = json.loads(out.stdout)
            assert not (isinstance(answer, dict) and "error" in answer), (line, answer)
    finally:
        for s in servers.values():
            s.stop()
