# Drives `dspex serve --record` from a real BEAM client, the way DSPex's bridge and pool
# do, so that recordings/ holds genuine Elixir sessions with real HTTP LM answers.
#
# usage: elixir record_sessions.exs OUT_DIR API_BASE PYTHON REPO_ROOT API_KEY [SCENARIO...]
# Each scenario spawns its own worker through Port.open({:spawn_executable, ...}) with
# {:packet, 4}, checks every reply it relies on (a wrong reply stops the script with a
# non-zero exit) and writes OUT_DIR/<scenario>.jsonl.

case Path.wildcard("/usr/lib/erlang/lib/jiffy-*/ebin") do
  [ebin | _] -> :code.add_patha(String.to_charlist(ebin))
  [] -> :ok
end

Code.require_file("port_replies.exs", __DIR__)
Code.require_file("two_way_frames.exs", __DIR__)

defmodule Rec do
  def open(ctx, name, extra_args, opts \\ []) do
    path = Path.join(ctx.out_dir, "#{name}.jsonl")
    File.rm(path)
    {args, env} =
      if Keyword.get(opts, :record_via_env, false) do
        {extra_args, [{~c"DSPEX_RECORD", String.to_charlist(path)}]}
      else
        {extra_args ++ ["--record", path], []}
      end

    env =
      env ++
        [
          {~c"PYTHONPATH", String.to_charlist(ctx.root)},
          {~c"LITELLM_LOCAL_MODEL_COST_MAP", ~c"True"},
          {~c"DSPEX_LOG_LEVEL", ~c"warning"}
        ]

    port =
      Port.open({:spawn_executable, String.to_charlist(ctx.python)}, [
        :binary,
        :exit_status,
        {:packet, 4},
        {:args, ["-m", "dspex_cli", "serve", "--no-control" | args]},
        {:env, env},
        {:cd, String.to_charlist(ctx.root)}
      ])

    {port, path}
  end

  def send_request(port, id, command, args) do
    frame = %{
      "id" => id,
      "command" => command,
      "args" => args,
      "timestamp" => DateTime.utc_now() |> DateTime.to_iso8601()
    }

    true = Port.command(port, :jiffy.encode(frame))
    id
  end

  def send_raw(port, bytes), do: true = Port.command(port, bytes)

  def await(port, id, timeout \\ 20_000), do: PortReplies.await(port, id, timeout, &:jiffy.decode(&1, [:return_maps]))

  def call(port, id, command, args) do
    send_request(port, id, command, args)
    await(port, id)
  end

  def ok!(reply, what) do
    unless reply["success"] == true and is_map(reply["result"]) do
      raise "#{what} failed: #{inspect(reply)}"
    end

    reply["result"]
  end

  def error!(reply, what, fragment) do
    unless reply["success"] == false and is_binary(reply["error"]) and
             String.contains?(reply["error"], fragment) do
      raise "#{what}: expected an error containing #{inspect(fragment)}, got #{inspect(reply)}"
    end

    reply
  end

  # The standalone bridge closes the port after cleanup; wait for the worker to finish
  # its transcript before the next scenario starts.
  def close_and_wait(port) do
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    Port.close(port)
    wait_gone(os_pid, 100)
  end

  def wait_gone(_pid, 0), do: raise("worker did not exit after its port closed")

  def wait_gone(pid, tries) do
    if File.exists?("/proc/#{pid}") do
      Process.sleep(50)
      wait_gone(pid, tries - 1)
    else
      :ok
    end
  end

  def await_exit(port, timeout \\ 10_000) do
    receive do
      {^port, {:exit_status, status}} -> status
      {^port, {:data, _}} -> await_exit(port, timeout)
    after
      timeout -> raise "worker did not exit"
    end
  end

  def lm(ctx, model, extra \\ %{}) do
    Map.merge(%{"model" => model, "api_base" => ctx.api_base, "api_key" => ctx.api_key, "temperature" => 0.0}, extra)
  end

  def qa_signature do
    %{
      "name" => "QuestionAnswer",
      "description" => "Answer the question in one short sentence.",
      "inputs" => [%{"name" => "question", "type" => "string", "description" => "what the user asks"}],
      "outputs" => [%{"name" => "answer", "type" => "string", "description" => "a short answer"}]
    }
  end
end

defmodule Scenarios do
  import Rec

  # DSPex's PythonBridge.Bridge: ping id 1, sequential ids, cleanup 999999 at the end.
  def standalone_bridge(ctx) do
    {port, path} = open(ctx, "standalone_bridge", ["--mode", "standalone"])
    "ok" = ok!(call(port, 1, "ping", %{}), "ping")["status"]
    stats = ok!(call(port, 2, "get_stats", %{}), "get_stats")
    true = is_integer(stats["command_count"])
    "configured" = ok!(call(port, 3, "configure_lm", lm(ctx, "openai/local-model")), "configure_lm")["status"]

    created =
      ok!(call(port, 4, "create_program", %{
        "id" => "qa_program",
        "signature" => qa_signature(),
        "program_type" => "predict"
      }), "create_program")

    "qa_program" = created["program_id"]

    result =
      ok!(call(port, 5, "execute_program", %{
        "program_id" => "qa_program",
        "inputs" => %{"question" => "What is the capital of France?"}
      }), "execute_program")

    true = is_binary(result["outputs"]["answer"])
    listed = ok!(call(port, 6, "list_programs", %{}), "list_programs")
    1 = listed["total_count"]
    info = ok!(call(port, 7, "get_program_info", %{"program_id" => "qa_program"}), "get_program_info")
    1 = info["execution_count"]
    "deleted" = ok!(call(port, 8, "delete_program", %{"program_id" => "qa_program"}), "delete_program")["status"]

    # Errors the bridge must answer, not crash on.
    error!(call(port, 9, "execute_program", %{"program_id" => "qa_program", "inputs" => %{"question" => "x"}}),
      "deleted program", "Program not found: qa_program")
    error!(call(port, 10, "frobnicate", %{}), "unknown command", "Unknown command: frobnicate")
    error!(call(port, 11, "create_program", %{"id" => "bad", "signature" => %{"inputs" => [%{"name" => "q", "type" => "list<"}], "outputs" => [%{"name" => "a", "type" => "string"}]}}),
      "bad signature type", "")
    send_raw(port, ~s({"id": 12, "command": "ping", "args": ))
    error!(await(port, 12), "broken JSON", "not valid JSON")
    send_raw(port, ~s({"id": 13, "command": "list_programs", "args": "not an object"}))
    error!(await(port, 13), "args of the wrong type", "must be an object")
    ok!(call(port, 14, "create_program", %{"id" => "dup", "signature" => "question -> answer"}), "create dup")
    error!(call(port, 15, "create_program", %{"id" => "dup", "signature" => "question -> answer"}),
      "duplicate id", "already exists")
    error!(call(port, 16, "cleanup_session", %{}), "cleanup_session without id", "Session ID required")
    stats = ok!(call(port, 17, "get_stats", %{}), "get_stats")
    true = stats["error_count"] >= 6
    cleaned = ok!(call(port, 999_999, "cleanup", %{}), "cleanup")
    "cleaned" = cleaned["status"]
    close_and_wait(port)
    path
  end

  # SessionPoolV2 + PoolWorkerV2: init ping id 0, per-session LMs and programs, program_data
  # so another worker can run a program, cleanup_session, then shutdown.
  def pool_session(ctx) do
    {port, path} = open(ctx, "pool_session", ["--mode", "pool-worker", "--worker-id", "pool_worker_7"], record_via_env: true)
    init = ok!(call(port, 0, "ping", %{"initialization" => true, "worker_id" => "pool_worker_7"}), "init ping")
    "ok" = init["status"]
    "pool-worker" = init["mode"]
    base = 1_730_000_000_000

    for {session, n} <- Enum.with_index(["alice", "bob", "carol"]) do
      args = Map.put(lm(ctx, "openai/local-model"), "session_id", "session_#{session}")
      "session" = ok!(call(port, base + n, "configure_lm", args), "configure_lm #{session}")["scope"]
    end

    created =
      ok!(call(port, base + 10, "create_program", %{
        "id" => "summarizer",
        "session_id" => "session_alice",
        "signature" => %{
          "name" => "Summarize",
          "description" => "Summarize the text in a few words.",
          "inputs" => [%{"name" => "text", "type" => "string", "description" => "text to summarize"}],
          "outputs" => [%{"name" => "summary", "type" => "string", "description" => "the summary"}]
        }
      }), "create in alice")

    ok!(call(port, base + 11, "execute_program", %{
      "program_id" => "summarizer",
      "session_id" => "session_alice",
      "inputs" => %{"text" => "Elixir runs on the BEAM and talks to Python through ports."}
    }), "execute in alice")

    # Bob's request lands on a worker that never saw the program: program_data rebuilds it.
    rebuilt =
      ok!(call(port, base + 12, "execute_program", %{
        "program_id" => "summarizer",
        "session_id" => "session_bob",
        "program_data" => created,
        "inputs" => %{"text" => "Pools route one session's calls to different workers."}
      }), "program_data execute in bob")

    true = is_binary(rebuilt["outputs"]["summary"])

    "updated" =
      ok!(call(port, base + 13, "update_session_data", %{
        "session_id" => "session_carol",
        "key" => "preferences",
        "value" => %{"tone" => "formal", "max_words" => 12}
      }), "update_session_data")["status"]

    data = ok!(call(port, base + 14, "get_session_data", %{"session_id" => "session_carol", "key" => "preferences"}), "get_session_data")
    12 = data["value"]["max_words"]

    ok!(call(port, base + 15, "execute_program", %{
      "program_id" => "summarizer",
      "session_id" => "session_carol",
      "program_data" => created,
      "inputs" => %{"text" => "Sessions keep programs apart."},
      "options" => [["temperature", 0.0]]
    }), "program_data execute in carol")

    sessions = ok!(call(port, base + 16, "list_sessions", %{}), "list_sessions")
    3 = sessions["total_count"]
    cleaned = ok!(call(port, base + 17, "cleanup_session", %{"session_id" => "session_alice"}), "cleanup_session")
    1 = cleaned["programs_removed"]
    0 = ok!(call(port, base + 18, "list_programs", %{"session_id" => "session_alice"}), "list after cleanup")["total_count"]
    1 = ok!(call(port, base + 19, "list_programs", %{"session_id" => "session_bob"}), "bob keeps his")["total_count"]
    "shutting_down" = ok!(call(port, base + 20, "shutdown", %{"worker_id" => "pool_worker_7"}), "shutdown")["status"]
    0 = await_exit(port)
    path
  end

  # Declared output types come back typed: integers, floats, booleans, lists, maps.
  def typed_outputs(ctx) do
    {port, path} = open(ctx, "typed_outputs", [])
    ok!(call(port, 1, "ping", %{}), "ping")
    ok!(call(port, 2, "configure_lm", lm(ctx, "openai/local-model")), "configure_lm")

    created =
      ok!(call(port, 3, "create_program", %{
        "signature" => %{
          "name" => "Profile",
          "description" => "Profile a product review.",
          "inputs" => [%{"name" => "review", "type" => "string"}, %{"name" => "tags", "type" => "list<string>"}],
          "outputs" => [
            %{"name" => "stars", "type" => "integer"},
            %{"name" => "score", "type" => "float"},
            %{"name" => "recommended", "type" => "boolean"},
            %{"name" => "keywords", "type" => "list<string>"},
            %{"name" => "facets", "type" => "dict"}
          ]
        }
      }), "create typed")

    # No id given: the worker generates one; replay must follow it.
    program_id = created["program_id"]

    for {review, id} <- [{"Great battery, poor screen.", 4}, {"Arrived broken.", 5}] do
      out = ok!(call(port, id, "execute_program", %{"program_id" => program_id, "inputs" => %{"review" => review, "tags" => ["phone", "2024"]}}), "typed execute")["outputs"]
      true = is_integer(out["stars"])
      true = is_float(out["score"])
      true = is_boolean(out["recommended"])
      true = is_list(out["keywords"])
      true = is_map(out["facets"])
    end

    ok!(call(port, 6, "create_program", %{"id" => "string_sig", "signature" => "question, context: list[str] -> answer: int, confident: bool"}), "string signature")
    out = ok!(call(port, 7, "execute_program", %{"program_id" => "string_sig", "inputs" => %{"question" => "How many?", "context" => ["one", "two"]}}), "string sig execute")["outputs"]
    true = is_integer(out["answer"])
    true = is_boolean(out["confident"])
    ok!(call(port, 999_999, "cleanup", %{}), "cleanup")
    close_and_wait(port)
    path
  end

  def chain_of_thought(ctx) do
    {port, path} = open(ctx, "chain_of_thought", [])
    ok!(call(port, 1, "ping", %{}), "ping")
    ok!(call(port, 2, "configure_lm", lm(ctx, "openai/local-model")), "configure_lm")

    ok!(call(port, 3, "create_program", %{
      "id" => "reasoner",
      "program_type" => "chain_of_thought",
      "signature" => %{
        "name" => "Solve",
        "description" => "Solve the word problem.",
        "inputs" => [%{"name" => "problem", "type" => "string"}],
        "outputs" => [%{"name" => "answer", "type" => "integer"}]
      },
      "demos" => [%{"problem" => "2 apples and 3 apples", "reasoning" => "2 + 3 = 5", "answer" => 5}]
    }), "create cot")

    for {problem, id} <- [{"Tom has 3 cats and buys 2 more.", 4}, {"A train of 7 cars loses 4.", 5}, {"Twice 6.", 6}] do
      out = ok!(call(port, id, "execute_program", %{"program_id" => "reasoner", "inputs" => %{"problem" => problem}}), "cot execute")["outputs"]
      true = is_binary(out["reasoning"])
      true = is_integer(out["answer"])
    end

    info = ok!(call(port, 7, "get_program_info", %{"program_id" => "reasoner"}), "info")
    3 = info["execution_count"]
    ok!(call(port, 999_999, "cleanup", %{}), "cleanup")
    close_and_wait(port)
    path
  end

  # Many requests in flight at once (as a pool under load sends them), pings among them.
  def concurrent_requests(ctx) do
    {port, path} = open(ctx, "concurrent_requests", ["--mode", "pool-worker", "--worker-id", "busy_worker"])
    ok!(call(port, 0, "ping", %{"initialization" => true, "worker_id" => "busy_worker"}), "init ping")
    ok!(call(port, 1, "configure_lm", lm(ctx, "openai/slow-delay-100")), "configure_lm")
    created = ok!(call(port, 2, "create_program", %{"id" => "classifier", "signature" => "text -> label, urgent: bool"}), "create")

    ids =
      for n <- 1..12 do
        session = Enum.at(["anonymous", "session_a", "session_b"], rem(n, 3))
        args = %{"program_id" => "classifier", "inputs" => %{"text" => "ticket number #{n}"}, "program_data" => created}
        args = if session == "anonymous", do: args, else: Map.put(args, "session_id", session)
        send_request(port, 100 + n, "execute_program", args)
      end

    pings = for n <- 1..3, do: send_request(port, 900 + n, "ping", %{})

    for id <- pings do
      "ok" = ok!(await(port, id), "ping under load")["status"]
    end

    for id <- ids do
      out = ok!(await(port, id), "concurrent execute")["outputs"]
      true = is_boolean(out["urgent"])
    end

    stats = ok!(call(port, 200, "get_stats", %{}), "stats")
    12 = stats["lm_calls"]
    "shutting_down" = ok!(call(port, 201, "shutdown", %{"worker_id" => "busy_worker"}), "shutdown")["status"]
    0 = await_exit(port)
    path
  end

  # DSPy's life cycle through the port: evaluate a plain program, compile it with
  # bootstrap_few_shot (a seed makes its choices repeat on replay), evaluate the compiled
  # program, move it through a portable document. The LM is the learnable test task: the
  # right answer is the question reversed, given untaught only to `easy-` questions.
  def evaluate_and_compile(ctx) do
    {port, path} = open(ctx, "evaluate_and_compile", [])
    ok!(call(port, 1, "ping", %{}), "ping")
    ok!(call(port, 2, "configure_lm", lm(ctx, "openai/learn", %{"cache" => false})), "configure_lm")
    ok!(call(port, 3, "create_program", %{"id" => "reverser", "signature" => "question -> answer"}), "create")
    devset = for q <- ["alpha", "bravo", "charlie", "delta"], do: %{"question" => q, "answer" => String.reverse(q)}
    trainset = for q <- ["easy-one", "two", "easy-three", "four", "easy-five", "six"],
                   do: %{"question" => q, "answer" => String.reverse(q)}
    metric = %{"metric" => "exact_match", "field" => "answer"}

    plain = ok!(call(port, 4, "evaluate_program", %{"program_id" => "reverser", "devset" => devset,
                                                    "metric" => metric, "num_threads" => 2, "wait" => true}), "evaluate plain")
    true = plain["score"] == 0

    compiled =
      ok!(call(port, 5, "compile_program", %{"program_id" => "reverser", "optimizer" => "bootstrap_few_shot",
                                             "trainset" => trainset, "metric" => metric, "seed" => 7,
                                             "new_program_id" => "reverser_compiled",
                                             "options" => %{"max_bootstrapped_demos" => 2, "max_labeled_demos" => 2},
                                             "wait" => true}), "compile")
    "reverser_compiled" = compiled["program_id"]
    job = ok!(call(port, 6, "get_job", %{"job_id" => compiled["job_id"]}), "get_job")
    "succeeded" = job["status"]

    scored = ok!(call(port, 7, "evaluate_program", %{"program_id" => "reverser_compiled", "devset" => devset,
                                                     "metric" => metric, "wait" => true}), "evaluate compiled")
    true = scored["score"] == 100

    document = ok!(call(port, 8, "export_program", %{"program_id" => "reverser_compiled"}), "export")["program"]
    ok!(call(port, 9, "import_program", %{"program" => document, "program_id" => "reverser_copy"}), "import")
    out = ok!(call(port, 10, "execute_program", %{"program_id" => "reverser_copy", "inputs" => %{"question" => "port"}}), "execute copy")["outputs"]
    "trop" = out["answer"]
    ok!(call(port, 11, "list_jobs", %{}), "list_jobs")
    ok!(call(port, 999_999, "cleanup", %{}), "cleanup")
    close_and_wait(port)
    path
  end

  # Tools and a metric that live in Elixir: a ReAct agent whose two tools are Elixir
  # functions (answered through callback events), then an evaluate scored by an Elixir
  # metric with its progress streamed. The replay answers the callbacks from this transcript.
  def elixir_tools(ctx) do
    {port, path} = open(ctx, "elixir_tools", [])
    ok!(TwoWayFrames.call(port, 1, "ping", %{}) |> elem(0), "ping")
    ok!(TwoWayFrames.call(port, 2, "configure_lm", lm(ctx, "openai/local-model"), %{}, 60_000) |> elem(0), "configure_lm")
    tools = [
      %{"name" => "lookup", "description" => "Finds a customer row.", "handler" => "client",
        "parameters" => %{"type" => "object", "properties" => %{"query" => %{"type" => "string"}}, "required" => ["query"]}},
      %{"name" => "count_words", "description" => "Counts the words of a text.", "handler" => "client",
        "parameters" => %{"type" => "object", "properties" => %{"text" => %{"type" => "string"}}, "required" => ["text"]}}
    ]
    ok!(TwoWayFrames.call(port, 3, "create_program", %{"id" => "agent", "signature" => "question -> answer",
                                                      "program_type" => "react", "tools" => tools}) |> elem(0), "create agent")
    handlers = %{
      "lookup" => fn %{"query" => q} -> %{"row" => String.upcase(q)} end,
      "count_words" => fn %{"text" => t} -> length(String.split(t)) end,
      "keep_metric" => fn %{"example" => ex} -> ex["answer"] == "keep" end
    }
    {reply, events} = TwoWayFrames.call(port, 4, "execute_program", %{"program_id" => "agent",
                                        "inputs" => %{"question" => "where is bob"}}, handlers, 60_000)
    steps = ok!(reply, "execute agent")["trajectory"]
    ["lookup", "count_words", "finish"] = Enum.map(steps, & &1["tool"])
    %{"row" => "WHERE IS BOB"} = Enum.at(steps, 0)["observation"]
    2 = length(events)
    ok!(TwoWayFrames.call(port, 5, "create_program", %{"id" => "qa", "signature" => "question -> answer"}) |> elem(0), "create qa")
    devset = for {q, a} <- [{"one", "keep"}, {"two", "drop"}, {"three", "keep"}], do: %{"question" => q, "answer" => a}
    {reply, _} = TwoWayFrames.call(port, 6, "evaluate_program", %{"program_id" => "qa", "devset" => devset, "wait" => true,
                                   "stream" => true, "metric" => %{"handler" => "client", "name" => "keep_metric"}},
                                   handlers, 60_000)
    scored = ok!(reply, "evaluate with an Elixir metric")
    true = abs(scored["score"] - 200 / 3) < 0.01
    ok!(TwoWayFrames.call(port, 999_999, "cleanup", %{}) |> elem(0), "cleanup")
    close_and_wait(port)
    path
  end
end

[out_dir, api_base, python, root, api_key | only] = System.argv()
File.mkdir_p!(out_dir)
ctx = %{out_dir: out_dir, api_base: api_base, python: python, root: root, api_key: api_key}
all = [:standalone_bridge, :pool_session, :typed_outputs, :chain_of_thought, :concurrent_requests,
       :evaluate_and_compile, :elixir_tools]
wanted = if only == [], do: all, else: Enum.map(only, &String.to_atom/1)

for scenario <- wanted do
  unless scenario in all, do: raise("unknown scenario #{scenario}")
  path = apply(Scenarios, scenario, [ctx])
  IO.puts("recorded #{scenario} -> #{path}")
end
