# A real BEAM client of `dspex serve`: opens the worker as an Erlang port exactly as the
# DSPex library does ({:packet, 4}, :binary, :exit_status), speaks JSON through Debian's
# erlang-jiffy, and walks the wire contract (docs/protocol.md).
#
# Usage:
#   elixir tests/elixir/contract_client.exs [--python PATH] [--api-base URL] [--root DIR]
#
# --api-base (or env DSPEX_TEST_API_BASE) is the base URL of tests/openai_server.py; when
# absent, this script starts that server itself as a second port. Exit status 0 only when
# every check passed; the last line is "elixir contract: N passed, M failed".

Code.require_file("port_replies.exs", __DIR__)

defmodule Contract.Checks do
  @moduledoc "Pass/fail bookkeeping; one BEAM process runs the whole script."

  def init, do: Process.put(:checks, {0, []})

  def check(name, true, _detail), do: record(name, :ok, nil)
  def check(name, _false, detail), do: record(name, :fail, detail)

  def equal(name, actual, expected),
    do: check(name, actual == expected, "expected #{inspect(expected)}, got #{inspect(actual)}")

  # A section that raises (timeout, worker gone, bad match) counts as one failed check,
  # and the remaining sections still run so one bug does not hide the others.
  def section(name, fun) do
    IO.puts("# #{name}")

    try do
      fun.()
    rescue
      error -> record("#{name} (aborted)", :fail, Exception.message(error))
    catch
      kind, value -> record("#{name} (aborted)", :fail, "#{kind}: #{inspect(value)}")
    end
  end

  def summary do
    {passed, failures} = Process.get(:checks)
    {passed, Enum.reverse(failures)}
  end

  defp record(name, :ok, _) do
    {passed, failures} = Process.get(:checks)
    IO.puts("ok   #{name}")
    Process.put(:checks, {passed + 1, failures})
  end

  defp record(name, :fail, detail) do
    {passed, failures} = Process.get(:checks)
    IO.puts("FAIL #{name}: #{detail}")
    Process.put(:checks, {passed, [{name, detail} | failures]})
  end
end

defmodule Contract.Worker do
  @moduledoc "One `dspex serve` behind an Erlang port; replies are matched by id."

  defstruct [:port, :os_pid]

  def open(python, root, args) do
    port =
      Port.open({:spawn_executable, python}, [
        :binary,
        :exit_status,
        {:packet, 4},
        {:cd, root},
        {:args, ["-m", "dspex_cli", "serve" | args]}
      ])

    # A worker that died at once has no OS pid left to report.
    os_pid =
      case Port.info(port, :os_pid) do
        {:os_pid, pid} -> pid
        _ -> nil
      end

    %__MODULE__{port: port, os_pid: os_pid}
  end

  def encode(term), do: IO.iodata_to_binary(:jiffy.encode(term))
  def decode(binary), do: :jiffy.decode(binary, [:return_maps, :use_nil])

  def send_request(%__MODULE__{port: port}, id, command, args) do
    frame = %{
      "id" => id,
      "command" => command,
      "args" => args,
      "timestamp" => DateTime.utc_now() |> DateTime.to_iso8601()
    }

    send_raw(%__MODULE__{port: port}, encode(frame))
    id
  end

  # Writing to a port whose worker already exited raises ArgumentError; say why instead.
  def send_raw(%__MODULE__{port: port}, binary) do
    try do
      true = Port.command(port, binary)
    rescue
      ArgumentError ->
        receive do
          {^port, {:exit_status, status}} -> raise "worker exited with status #{status} before a request"
        after
          1_000 -> raise "the worker's port is closed"
        end
    end
  end

  def request(worker, id, command, args, timeout \\ 30_000) do
    send_request(worker, id, command, args)
    await(worker, id, timeout)
  end

  # Replies may arrive in any order: the ones for other ids wait in a stash.
  def await(%__MODULE__{port: port}, id, timeout \\ 30_000), do: PortReplies.await(port, id, timeout, &decode/1)

  # The next frame to arrive, whatever its id (to check the order of replies).
  def next_reply(%__MODULE__{port: port}, timeout) do
    receive do
      {^port, {:data, binary}} -> decode(binary)
      {^port, {:exit_status, status}} -> raise "worker exited with status #{status}"
    after
      timeout -> raise "no reply within #{timeout} ms"
    end
  end

  # Replies nobody asked for: what arrived unclaimed so far plus what comes within `wait`.
  def strays(%__MODULE__{port: port}, wait) do
    PortReplies.take_all(port) ++ drain(port, wait)
  end

  defp drain(port, wait) do
    receive do
      {^port, {:data, binary}} -> [decode(binary) | drain(port, wait)]
    after
      wait -> []
    end
  end

  def await_exit(%__MODULE__{port: port}, timeout) do
    receive do
      {^port, {:exit_status, status}} -> {:exited, status}
      {^port, {:data, _}} -> await_exit(%__MODULE__{port: port}, timeout)
    after
      timeout -> :timeout
    end
  end

  # A process that has exited is either gone from /proc or a zombie awaiting its reaper.
  def os_process_alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} ->
        [_, after_name] = String.split(stat, ") ", parts: 2)
        not String.starts_with?(after_name, ["Z", "X"])

      {:error, _} ->
        false
    end
  end
end

defmodule Contract.LocalServer do
  @moduledoc "What tests/openai_server.py answers, recomputed here to check outputs are real."

  def joined(inputs) do
    inputs
    |> Enum.sort_by(fn {k, _} -> k end)
    |> Enum.map(fn {k, v} -> "#{k}=#{v}" end)
    |> Enum.join(" | ")
  end

  def expected(inputs) do
    joined = joined(inputs)

    %{
      "answer" => "answer for " <> joined,
      "word_count" => inputs |> Map.values() |> Enum.map(&String.length/1) |> Enum.sum(),
      "score" => String.length(joined) / 4,
      "is_even" => rem(String.length(joined), 2) == 0,
      "keywords" => joined |> String.split() |> Enum.take(3),
      "reasoning" => "Thinking about " <> joined <> "."
    }
  end

  # Starts tests/openai_server.py as a port when no server URL was given.
  def start(python, root) do
    port =
      Port.open({:spawn_executable, python}, [
        :binary,
        {:line, 4096},
        {:cd, root},
        {:args, [Path.join([root, "tests", "openai_server.py"]), "--port", "0"]}
      ])

    receive do
      {^port, {:data, {:eol, url}}} -> {port, url}
    after
      10_000 -> raise "tests/openai_server.py printed no URL within 10 s"
    end
  end
end

defmodule Contract.Main do
  import Contract.Checks
  alias Contract.Worker
  alias Contract.LocalServer

  @typed_signature %{
    "name" => "TypedQA",
    "description" => "Answer a question with typed facts about it.",
    "inputs" => [
      %{"name" => "question", "type" => "string", "description" => "the question"},
      %{"name" => "topic", "type" => "string", "description" => "its topic"}
    ],
    "outputs" => [
      %{"name" => "answer", "type" => "string", "description" => "the answer"},
      %{"name" => "word_count", "type" => "integer", "description" => "a count"},
      %{"name" => "score", "type" => "float", "description" => "a score"},
      %{"name" => "is_even", "type" => "boolean", "description" => "a flag"},
      %{"name" => "keywords", "type" => "list<string>", "description" => "some words"}
    ]
  }

  @simple_signature %{
    "name" => "Echo",
    "description" => "Answer a question.",
    "inputs" => [%{"name" => "question", "type" => "string", "description" => "q"}],
    "outputs" => [%{"name" => "answer", "type" => "string", "description" => "a"}]
  }

  @inputs %{"question" => "What is two plus two?", "topic" => "arithmetic"}

  def run(argv) do
    # A port whose worker died (e.g. before reading a request: EPIPE) sends its owner an
    # exit signal; trapped, it is a message, and the failed check is reported, not fatal.
    Process.flag(:trap_exit, true)

    {opts, _, _} =
      OptionParser.parse(argv, strict: [python: :string, api_base: :string, root: :string])

    root = opts[:root] || Path.expand("../..", __DIR__)
    python = opts[:python] || System.get_env("DSPEX_PYTHON") || System.find_executable("python3")
    api_base = opts[:api_base] || System.get_env("DSPEX_TEST_API_BASE")
    Contract.Checks.init()
    IO.puts("# jiffy from #{:code.which(:jiffy)}; worker #{python} -m dspex_cli serve")

    {server_port, api_base} =
      if api_base, do: {nil, api_base}, else: LocalServer.start(python, root)

    section("pool worker walk", fn -> pool_walk(python, root, api_base) end)
    section("standalone bridge: cleanup 999999, then Port.close ends the worker", fn ->
      standalone_close(python, root)
    end)

    if server_port, do: Port.close(server_port)
    {passed, failures} = Contract.Checks.summary()

    for {name, detail} <- failures, do: IO.puts(:stderr, "failed: #{name}: #{detail}")
    IO.puts("elixir contract: #{passed} passed, #{length(failures)} failed")
    System.halt(if failures == [], do: 0, else: 1)
  end

  defp lm_args(api_base, model),
    do: %{"model" => model, "api_base" => api_base, "api_key" => "sk-elixir-contract-secret"}

  defp pool_walk(python, root, api_base) do
    w = Worker.open(python, root, ["--mode", "pool-worker", "--worker-id", "elixir-w1"])

    # The pool's init ping: id 0, answered within 5 s or the pool kills the worker.
    started = System.monotonic_time(:millisecond)
    init = Worker.request(w, 0, "ping", %{"initialization" => true, "worker_id" => "elixir-w1"}, 5_000)
    elapsed = System.monotonic_time(:millisecond) - started
    equal("init ping echoes id 0", init["id"], 0)
    equal("init ping succeeds", init["success"], true)
    equal("init ping status ok", init["result"]["status"], "ok")
    equal("init ping mode", init["result"]["mode"], "pool-worker")
    equal("init ping worker_id", init["result"]["worker_id"], "elixir-w1")
    check("init ping uptime is a float", is_float(init["result"]["uptime"]), inspect(init["result"]["uptime"]))
    check("init ping timestamp is a float", is_float(init["timestamp"]), inspect(init["timestamp"]))
    check("init ping dspy_available is a boolean", is_boolean(init["result"]["dspy_available"]), inspect(init))
    check("init ping answered within 5 s", elapsed < 5_000, "#{elapsed} ms")

    pings = for id <- 1..5, do: Worker.request(w, id, "ping", %{}, 5_000)
    equal("standalone pings echo their ids", Enum.map(pings, & &1["id"]), Enum.to_list(1..5))
    check("pings all ok", Enum.all?(pings, &(&1["result"]["status"] == "ok")), inspect(pings))

    stats = Worker.request(w, 6, "get_stats", %{})
    result = stats["result"]
    check("get_stats uptime is a float", is_float(result["uptime"]), inspect(result["uptime"]))
    check("get_stats command_count counts the pings", result["command_count"] >= 7, inspect(result))
    check("get_stats memory_usage has rss/vms/percent",
      is_integer(result["memory_usage"]["rss"]) and result["memory_usage"]["rss"] > 0 and
        Map.has_key?(result["memory_usage"], "vms") and Map.has_key?(result["memory_usage"], "percent"),
      inspect(result["memory_usage"]))
    check("get_stats has programs_count and error_count",
      is_integer(result["programs_count"]) and is_integer(result["error_count"]), inspect(result))

    configured = Worker.request(w, 7, "configure_lm", lm_args(api_base, "openai/local-model"), 60_000)
    equal("configure_lm succeeds", configured["success"], true)
    equal("configure_lm status", configured["result"]["status"], "configured")
    equal("configure_lm model", configured["result"]["model"], "openai/local-model")
    check("configure_lm reply holds no api_key",
      not String.contains?(Worker.encode(configured), "sk-elixir-contract-secret"), inspect(configured))

    created =
      Worker.request(w, 8, "create_program", %{
        "id" => "typed_qa",
        "signature" => @typed_signature,
        "program_type" => "predict"
      })

    equal("create_program succeeds", created["success"], true)
    cr = created["result"]
    equal("create_program program_id", cr["program_id"], "typed_qa")
    equal("create_program status", cr["status"], "created")
    equal("create_program fallback_used", cr["fallback_used"], false)
    check("create_program signature_def keeps the types",
      String.contains?(cr["signature_def"] || "", "word_count: int") and
        String.contains?(cr["signature_def"] || "", "is_even: bool"),
      inspect(cr["signature_def"]))
    check("create_program has field_mapping and signature_class",
      is_map(cr["field_mapping"]) and is_binary(cr["signature_class"]), inspect(cr))

    executed = Worker.request(w, 9, "execute_program", %{"program_id" => "typed_qa", "inputs" => @inputs}, 60_000)
    equal("execute_program succeeds", executed["success"], true)
    outputs = executed["result"]["outputs"]
    expected = LocalServer.expected(@inputs)
    check("integer output is an integer", is_integer(outputs["word_count"]), inspect(outputs["word_count"]))
    equal("integer output is the server's count", outputs["word_count"], expected["word_count"])
    check("float output is a float", is_float(outputs["score"]), inspect(outputs["score"]))
    equal("float output is the server's score", outputs["score"], expected["score"])
    check("boolean output is a boolean", is_boolean(outputs["is_even"]), inspect(outputs["is_even"]))
    equal("boolean output is the server's flag", outputs["is_even"], expected["is_even"])
    equal("list<string> output is the server's list", outputs["keywords"], expected["keywords"])
    equal("string output is the server's answer", outputs["answer"], expected["answer"])
    check("execute_program execution_time is a number",
      is_number(executed["result"]["execution_time"]), inspect(executed["result"]))

    cot =
      Worker.request(w, 10, "create_program", %{
        "id" => "cot_qa",
        "signature" => @simple_signature,
        "program_type" => "chain_of_thought"
      })

    equal("create chain_of_thought succeeds", cot["success"], true)
    cot_inputs = %{"question" => "Why is the sky blue?"}
    cot_run = Worker.request(w, 11, "execute_program", %{"program_id" => "cot_qa", "inputs" => cot_inputs}, 60_000)
    equal("chain of thought has the server's reasoning",
      cot_run["result"]["outputs"]["reasoning"], LocalServer.expected(cot_inputs)["reasoning"])
    equal("chain of thought answer", cot_run["result"]["outputs"]["answer"],
      LocalServer.expected(cot_inputs)["answer"])

    listed = Worker.request(w, 12, "list_programs", %{})
    equal("list_programs succeeds (no 'signature' crash)", listed["success"], true)
    ids = listed["result"]["programs"] |> Enum.map(& &1["id"]) |> Enum.sort()
    equal("list_programs ids", ids, ["cot_qa", "typed_qa"])
    equal("list_programs total_count", listed["result"]["total_count"], 2)
    typed_entry = Enum.find(listed["result"]["programs"], &(&1["id"] == "typed_qa"))
    equal("list_programs execution_count", typed_entry["execution_count"], 1)
    check("list_programs entries carry the contract keys",
      Enum.all?(["created_at", "execution_count", "last_executed", "signature"], &Map.has_key?(typed_entry, &1)),
      inspect(typed_entry))

    info = Worker.request(w, 13, "get_program_info", %{"program_id" => "typed_qa"})
    equal("get_program_info succeeds", info["success"], true)
    equal("get_program_info program_id", info["result"]["program_id"], "typed_qa")
    check("get_program_info signature and counts",
      is_map(info["result"]["signature"]) and info["result"]["execution_count"] == 1 and
        is_number(info["result"]["last_executed"]),
      inspect(info["result"]))

    # Errors the Elixir clients match on.
    unknown = Worker.request(w, 14, "frobnicate", %{})
    error_reply("unknown command", unknown, 14, "Unknown command: frobnicate")
    missing = Worker.request(w, 15, "execute_program", %{"program_id" => "nope", "inputs" => %{}})
    error_reply("missing program", missing, 15, "Program not found: nope")
    dup = Worker.request(w, 16, "create_program", %{"id" => "typed_qa", "signature" => @typed_signature})
    error_reply("duplicate program", dup, 16, "Program with ID 'typed_qa' already exists")
    no_session = Worker.request(w, 17, "cleanup_session", %{})
    error_reply("cleanup_session without id", no_session, 17, "Session ID required for cleanup")
    info_missing = Worker.request(w, 18, "get_program_info", %{"program_id" => "ghost"})
    error_reply("get_program_info missing", info_missing, 18, "Program not found: ghost")

    sessions_walk(w, api_base)
    bad_frames_walk(w)
    ping_during_lm_call(w, api_base)

    # The pool's stop: shutdown, then the worker exits 0 on its own within 2 s.
    sent = System.monotonic_time(:millisecond)
    down = Worker.request(w, 900, "shutdown", %{"worker_id" => "elixir-w1"}, 5_000)
    equal("shutdown status", down["result"]["status"], "shutting_down")
    equal("shutdown worker_id", down["result"]["worker_id"], "elixir-w1")
    exit = Worker.await_exit(w, 2_000)
    waited = System.monotonic_time(:millisecond) - sent
    equal("after shutdown the port reports exit_status 0 within 2 s", exit, {:exited, 0})
    IO.puts("#   exit after shutdown took #{waited} ms")
  end

  defp error_reply(label, reply, id, message) do
    equal("#{label}: id echoed", reply["id"], id)
    equal("#{label}: success false", reply["success"], false)
    check("#{label}: error is a string starting #{inspect(message)}",
      is_binary(reply["error"]) and String.starts_with?(reply["error"], message), inspect(reply["error"]))
    check("#{label}: no result key", not Map.has_key?(reply, "result"), inspect(reply))
  end

  defp sessions_walk(w, api_base) do
    # Same program id in two sessions, with different signatures: no clash.
    a = Worker.request(w, 100, "create_program", %{"id" => "shared", "session_id" => "sess_a",
      "signature" => @typed_signature})
    b = Worker.request(w, 101, "create_program", %{"id" => "shared", "session_id" => "sess_b",
      "signature" => @simple_signature, "program_type" => "chain_of_thought"})
    equal("same id in session a", a["success"], true)
    equal("same id in session b", b["success"], true)

    list_a = Worker.request(w, 102, "list_programs", %{"session_id" => "sess_a"})
    equal("session a lists only its program", Enum.map(list_a["result"]["programs"], & &1["id"]), ["shared"])
    anon = Worker.request(w, 103, "get_program_info", %{"program_id" => "shared"})
    error_reply("anonymous session does not see session programs", anon, 103, "Program not found: shared")
    info_b = Worker.request(w, 104, "get_program_info", %{"program_id" => "shared", "session_id" => "sess_b"})
    equal("session b's program keeps its own signature",
      Enum.map(info_b["result"]["signature"]["outputs"], & &1["name"]), ["answer"])

    # A session LM overrides the default for that session only.
    session_lm = Worker.request(w, 105, "configure_lm",
      Map.put(lm_args(api_base, "openai/session-model"), "session_id", "sess_b"), 60_000)
    equal("session LM configured", session_lm["success"], true)
    in_b = Worker.request(w, 112, "execute_program", %{"program_id" => "shared", "session_id" => "sess_b",
      "inputs" => %{"question" => "Which LM?"}}, 60_000)
    equal("session b executes with its own LM", in_b["result"]["model"], "openai/session-model")
    equal("session b's chain of thought answer", in_b["result"]["outputs"]["answer"],
      LocalServer.expected(%{"question" => "Which LM?"})["answer"])

    # program_data: another session (another worker, in a pool) rebuilds the program.
    via_data = Worker.request(w, 106, "execute_program", %{
      "program_id" => "shared",
      "session_id" => "sess_elsewhere",
      "program_data" => a["result"],
      "inputs" => @inputs
    }, 60_000)
    equal("program_data execution succeeds in another session", via_data["success"], true)
    equal("program_data execution gives typed outputs",
      via_data["result"]["outputs"]["word_count"], LocalServer.expected(@inputs)["word_count"])

    cleaned = Worker.request(w, 107, "cleanup_session", %{"session_id" => "sess_a"})
    equal("cleanup_session status", cleaned["result"]["status"], "cleaned")
    equal("cleanup_session session_id", cleaned["result"]["session_id"], "sess_a")
    equal("cleanup_session programs_removed", cleaned["result"]["programs_removed"], 1)
    gone = Worker.request(w, 108, "execute_program", %{"program_id" => "shared", "session_id" => "sess_a",
      "inputs" => @inputs})
    error_reply("cleaned session lost its program", gone, 108, "Program not found: shared")
    still_b = Worker.request(w, 109, "get_program_info", %{"program_id" => "shared", "session_id" => "sess_b"})
    equal("other session untouched by cleanup_session", still_b["success"], true)
    still_anon = Worker.request(w, 110, "list_programs", %{})
    equal("anonymous session untouched by cleanup_session", still_anon["result"]["total_count"], 2)

    deleted = Worker.request(w, 111, "delete_program", %{"program_id" => "shared", "session_id" => "sess_b"})
    equal("delete_program status", deleted["result"]["status"], "deleted")
  end

  defp bad_frames_walk(w) do
    before = Worker.request(w, 200, "get_stats", %{})["result"]["protocol_errors"]
    Worker.send_raw(w, "this is not json")
    Worker.send_raw(w, "[1, 2, 3]")
    Worker.send_raw(w, Worker.encode(%{"command" => "ping", "args" => %{}}))
    Worker.send_request(w, 201, 42, %{})
    Worker.send_raw(w, ~s({"id": 202, "command": "ping", "args": ))
    Worker.send_request(w, 203, "ping", :null)

    non_string = Worker.await(w, 201, 5_000)
    equal("non-string command gets an error reply", non_string["success"], false)
    check("non-string command error is a string", is_binary(non_string["error"]), inspect(non_string))
    broken = Worker.await(w, 202, 5_000)
    check("broken JSON with a visible id gets a JSON error reply",
      broken["success"] == false and String.contains?(broken["error"], "JSON"), inspect(broken))
    null_args = Worker.await(w, 203, 5_000)
    equal("args: null is accepted", null_args["result"]["status"], "ok")

    after_stats = Worker.request(w, 204, "get_stats", %{})
    equal("unanswerable frames are counted in get_stats", after_stats["result"]["protocol_errors"] - before, 3)
    equal("unanswerable frames get no reply", Worker.strays(w, 100), [])
    still = Worker.request(w, 205, "ping", %{}, 5_000)
    equal("worker keeps serving after bad frames", still["result"]["status"], "ok")
  end

  defp ping_during_lm_call(w, api_base) do
    configured = Worker.request(w, 300, "configure_lm",
      Map.put(lm_args(api_base, "openai/delay-500"), "session_id", "slow"), 60_000)
    equal("slow session LM configured", configured["success"], true)
    created = Worker.request(w, 301, "create_program", %{"id" => "slow_qa", "session_id" => "slow",
      "signature" => @simple_signature})
    equal("slow program created", created["success"], true)

    started = System.monotonic_time(:millisecond)
    Worker.send_request(w, 302, "execute_program", %{"program_id" => "slow_qa", "session_id" => "slow",
      "inputs" => %{"question" => "slow?"}})
    Process.sleep(100)
    ping_sent = System.monotonic_time(:microsecond)
    Worker.send_request(w, 303, "ping", %{})
    first = Worker.next_reply(w, 5_000)
    ping_ms = (System.monotonic_time(:microsecond) - ping_sent) / 1000
    equal("the ping is answered before the 500 ms LM call", first["id"], 303)
    check("the ping is answered promptly during the LM call", ping_ms < 100, "#{ping_ms} ms")
    IO.puts("#   ping during LM call: #{Float.round(ping_ms, 2)} ms")
    slow = Worker.await(w, 302, 10_000)
    slow_ms = System.monotonic_time(:millisecond) - started
    equal("the slow call succeeds", slow["success"], true)
    check("the slow call really waited for the LM", slow_ms >= 500, "#{slow_ms} ms")
  end

  defp standalone_close(python, root) do
    w = Worker.open(python, root, [])
    first = Worker.request(w, 1, "ping", %{}, 5_000)
    equal("standalone first ping id 1", first["id"], 1)
    equal("standalone mode", first["result"]["mode"], "standalone")

    mock = Worker.request(w, 2, "configure_lm", %{"model" => "mock"}, 30_000)
    equal("mock LM configured", mock["success"], true)
    Worker.request(w, 3, "create_program", %{"id" => "m1", "signature" => @typed_signature})
    run = Worker.request(w, 4, "execute_program", %{"program_id" => "m1", "inputs" => @inputs}, 30_000)
    equal("mock LM executes", run["success"], true)
    check("mock LM outputs are typed",
      is_integer(run["result"]["outputs"]["word_count"]) and is_float(run["result"]["outputs"]["score"]) and
        is_boolean(run["result"]["outputs"]["is_even"]) and is_list(run["result"]["outputs"]["keywords"]),
      inspect(run["result"]["outputs"]))

    cleanup = Worker.request(w, 999_999, "cleanup", %{}, 5_000)
    equal("cleanup id 999999 echoed", cleanup["id"], 999_999)
    equal("cleanup status", cleanup["result"]["status"], "cleaned")
    equal("cleanup programs_removed", cleanup["result"]["programs_removed"], 1)

    check("worker OS process alive before close", Worker.os_process_alive?(w.os_pid), "pid #{w.os_pid}")
    Port.close(w.port)
    gone = wait_gone(w.os_pid, System.monotonic_time(:millisecond) + 2_000)
    check("closing the port ends the worker within 2 s", gone, "pid #{w.os_pid} still running")
  end

  defp wait_gone(os_pid, deadline) do
    cond do
      not Worker.os_process_alive?(os_pid) -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(20) && wait_gone(os_pid, deadline)
    end
  end
end

Contract.Main.run(System.argv())
