# The BEAM proof of two-way frames: a real Elixir client opens `dspex serve` as an Erlang
# port ({:packet, 4}, jiffy) and talks to the suite's local OpenAI-compatible server.
#
# usage: elixir twoway_client.exs --python PYTHON --api-base URL --root REPO_ROOT
# It streams (execute_program chunks when the worker streams them, else evaluate's progress
# events), runs a ReAct program whose two tools are Elixir functions, runs an evaluate
# whose metric is an Elixir function, cancels a slow request, lets a deadline expire, and
# checks that requests that asked for nothing get no event. Last line:
# "elixir two-way: N passed, M failed"; exit status 0 only when none failed.

case Path.wildcard("/usr/lib/erlang/lib/jiffy-*/ebin") do
  [ebin | _] -> :code.add_patha(String.to_charlist(ebin))
  [] -> :ok
end

Code.require_file("two_way_frames.exs", __DIR__)

Code.require_file("checks.exs", __DIR__)

defmodule ElixirTools do
  # The agent's tools and the evaluation's metric: plain Elixir functions.
  def lookup(%{"query" => query}), do: %{"row" => String.upcase(query), "source" => "ets"}
  def count_words(%{"text" => text}), do: length(String.split(text))

  def metric(%{"example" => example, "prediction" => prediction}) do
    # 1 for an example whose expected answer is "keep" and whose prediction has an answer.
    example["answer"] == "keep" and is_binary(prediction["answer"]) and prediction["answer"] != ""
  end
end

alias TwoWayFrames, as: TW

{opts, _, _} = OptionParser.parse(System.argv(), strict: [python: :string, api_base: :string, root: :string])
python = Keyword.fetch!(opts, :python)
api_base = Keyword.fetch!(opts, :api_base)
root = Keyword.fetch!(opts, :root)
lm = fn model -> %{"model" => model, "api_base" => api_base, "api_key" => "sk-elixir-two-way-secret",
                   "temperature" => 0.0} end

port =
  Port.open({:spawn_executable, String.to_charlist(python)}, [
    :binary, :exit_status, {:packet, 4},
    {:args, ["-m", "dspex_cli", "serve", "--no-control"]},
    {:env, [{~c"PYTHONPATH", String.to_charlist(root)}, {~c"LITELLM_LOCAL_MODEL_COST_MAP", ~c"True"},
            {~c"DSPEX_LOG_LEVEL", ~c"warning"}]},
    {:cd, String.to_charlist(root)}
  ])

Checks.step("setup", fn ->
  {ping, _} = TW.call(port, 1, "ping", %{})
  Checks.equal("ping", ping["result"]["status"], "ok")
  {configured, _} = TW.call(port, 2, "configure_lm", lm.("openai/two-way-model"), %{}, 60_000)
  Checks.equal("configure_lm", configured["success"], true)
  {slow, _} = TW.call(port, 3, "configure_lm", Map.put(lm.("openai/delay-3000"), "session_id", "slow"))
  Checks.equal("slow session LM", slow["success"], true)
  {created, _} = TW.call(port, 4, "create_program", %{"id" => "qa", "signature" => "question -> answer"})
  Checks.equal("create qa", created["success"], true)
  {created, _} = TW.call(port, 5, "create_program", %{"id" => "slow_qa", "signature" => "question -> answer",
                                                     "session_id" => "slow"})
  Checks.equal("create slow_qa", created["success"], true)
end)

Checks.step("a plain client gets no events", fn ->
  {reply, events} = TW.call(port, 10, "execute_program", %{"program_id" => "qa",
                                                           "inputs" => %{"question" => "plain"}}, %{}, 60_000)
  Checks.equal("plain execute succeeds", reply["success"], true)
  Checks.equal("plain execute: no events", events, [])
  {reply, events} = TW.call(port, 11, "evaluate_program", %{"program_id" => "qa", "wait" => true,
                            "metric" => "exact_match", "devset" => [%{"question" => "a", "answer" => "b"}]})
  Checks.equal("plain evaluate succeeds", reply["success"], true)
  Checks.equal("plain evaluate: no events", events, [])
end)

Checks.step("streaming", fn ->
  {reply, events} = TW.call(port, 20, "execute_program", %{"program_id" => "qa", "stream" => true,
                                                           "inputs" => %{"question" => "stream me"}}, %{}, 60_000)
  Checks.equal("streamed execute succeeds", reply["success"], true)
  chunks = for %{"event" => "chunk", "data" => data} <- events, do: data
  if chunks == [] do
    # TODO(stream branch): execute_program streaming is not on this worker yet.
    Checks.check("execute_program without streaming says so", is_binary(reply["warning"]), inspect(reply))
    Checks.note("execute_program does not stream on this worker: progress events checked instead")
  else
    joined = chunks |> Enum.filter(&(&1["field"] == "answer")) |> Enum.map_join(& &1["delta"])
    Checks.equal("answer deltas join to the final answer", joined, reply["result"]["outputs"]["answer"])
    Checks.check("events carry the request's id", Enum.all?(events, &(&1["id"] == 20 and not Map.has_key?(&1, "success"))),
          inspect(events))
  end

  devset = for q <- ["p1", "p2", "p3", "p4"], do: %{"question" => q, "answer" => q}
  {reply, events} = TW.call(port, 21, "evaluate_program", %{"program_id" => "qa", "wait" => true, "stream" => true,
                                                            "metric" => "exact_match", "devset" => devset})
  Checks.equal("streamed evaluate succeeds", reply["success"], true)
  progress = for %{"event" => "progress", "data" => data} <- events, do: data
  dones = Enum.map(progress, & &1["done"])
  Checks.check("progress events came", progress != [], inspect(events))
  Checks.equal("progress counts up", dones, Enum.sort(dones))
  Checks.equal("last progress is the whole dev set", List.last(progress)["done"], 4)
  Checks.equal("last progress status", List.last(progress)["status"], "succeeded")
end)

Checks.step("ReAct with two Elixir tools", fn ->
  tools = [
    %{"name" => "lookup", "description" => "Finds a row in ETS.", "handler" => "client",
      "parameters" => %{"type" => "object", "properties" => %{"query" => %{"type" => "string"}},
                        "required" => ["query"]}},
    %{"name" => "count_words", "description" => "Counts words.", "handler" => "client",
      "parameters" => %{"type" => "object", "properties" => %{"text" => %{"type" => "string"}},
                        "required" => ["text"]}}
  ]
  {created, _} = TW.call(port, 30, "create_program", %{"id" => "agent", "signature" => "question -> answer",
                                                       "program_type" => "react", "tools" => tools})
  Checks.equal("create agent", created["success"], true)
  handlers = %{"lookup" => &ElixirTools.lookup/1, "count_words" => &ElixirTools.count_words/1}
  {reply, events} = TW.call(port, 31, "execute_program", %{"program_id" => "agent",
                                                           "inputs" => %{"question" => "where is bob"}},
                            handlers, 60_000)
  Checks.equal("agent succeeds", reply["success"], true)
  steps = reply["result"]["trajectory"]
  Checks.equal("tools called in order", Enum.map(steps, & &1["tool"]), ["lookup", "count_words", "finish"])
  Checks.equal("lookup's observation is the Elixir function's value", Enum.at(steps, 0)["observation"],
        ElixirTools.lookup(%{"query" => "where is bob"}))
  Checks.equal("count_words's observation", Enum.at(steps, 1)["observation"], 3)
  asked = for %{"event" => "callback", "data" => d} <- events, do: {d["kind"], d["name"], d["args"]}
  Checks.equal("two callbacks, one per tool", asked, [{"tool", "lookup", %{"query" => "where is bob"}},
                                                {"tool", "count_words", %{"text" => "where is bob"}}])

  failing = %{"lookup" => fn _ -> {:error, "ets table gone"} end, "count_words" => fn _ -> :no_answer end}
  {reply, _} = TW.call(port, 32, "execute_program", %{"program_id" => "agent", "callback_timeout_ms" => 300,
                                                      "inputs" => %{"question" => "who"}}, failing, 60_000)
  Checks.equal("an agent whose tools fail still answers", reply["success"], true)
  [first, second | _] = reply["result"]["trajectory"]
  Checks.check("the error answer is the observation", String.contains?(first["observation"], "ets table gone"),
        inspect(first))
  Checks.check("the unanswered call is a timeout observation", String.contains?(second["observation"], "300 ms"),
        inspect(second))
end)

Checks.step("evaluate with an Elixir metric", fn ->
  devset = for {q, label} <- [{"a", "keep"}, {"b", "drop"}, {"c", "keep"}, {"d", "drop"}],
               do: %{"question" => q, "answer" => label}
  {created, _} = TW.call(port, 40, "create_program", %{"id" => "labelled", "signature" => "question -> answer"})
  Checks.equal("create labelled", created["success"], true)
  {reply, events} = TW.call(port, 41, "evaluate_program",
                            %{"program_id" => "labelled", "wait" => true, "num_threads" => 4, "devset" => devset,
                              "metric" => %{"handler" => "client", "name" => "keep_metric"}},
                            %{"keep_metric" => &ElixirTools.metric/1}, 60_000)
  Checks.check("evaluate succeeds", reply["success"] == true, inspect(reply))
  Checks.equal("score from the Elixir metric", reply["result"]["score"], 50.0)
  Checks.equal("per-example scores", Enum.map(reply["result"]["results"], & &1["score"]), [1.0, 0.0, 1.0, 0.0])
  kinds = for %{"event" => "callback", "data" => d} <- events, do: {d["kind"], d["name"]}
  Checks.equal("one metric callback per example", kinds, List.duplicate({"metric", "keep_metric"}, 4))
end)

Checks.step("cancel a slow request", fn ->
  TW.send_request(port, 50, "execute_program", %{"program_id" => "slow_qa", "session_id" => "slow",
                                                 "inputs" => %{"question" => "slow"}})
  Process.sleep(300)
  started = System.monotonic_time(:millisecond)
  {cancelled, _} = TW.call(port, 51, "cancel", %{"request_id" => 50})
  {reply, _} = TW.await(port, 50, %{}, 5_000)
  elapsed = System.monotonic_time(:millisecond) - started
  Checks.equal("cancel succeeds", cancelled["result"]["status"], "cancelled")
  Checks.equal("the slow request is cancelled", reply["error_type"], "cancelled")
  Checks.check("answered within 2 s (hang bound)", elapsed < 2_000, "#{elapsed} ms")
  {again, _} = TW.call(port, 52, "cancel", %{"request_id" => 50})
  Checks.equal("cancelling it again", again["error_type"], "request_not_found")
end)

Checks.step("a deadline expires", fn ->
  {reply, _} = TW.call(port, 60, "execute_program", %{"program_id" => "slow_qa", "session_id" => "slow",
                                                      "deadline_ms" => 400, "inputs" => %{"question" => "late"}},
                       %{}, 5_000)
  Checks.equal("deadline_exceeded", reply["error_type"], "deadline_exceeded")
  {ping, _} = TW.call(port, 61, "ping", %{})
  Checks.equal("the worker still serves", ping["result"]["status"], "ok")
end)

Port.close(port)
Checks.finish("elixir two-way")
