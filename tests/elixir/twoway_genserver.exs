# Runs docs/elixir.md's two-way GenServer ("Streaming, Elixir tools and cancellation")
# through a real BEAM, exactly as the page writes it.
#
# usage: elixir twoway_genserver.exs BLOCKS_DIR API_BASE
# BLOCKS_DIR holds the page's blocks, cut out by tests/integration/test_docs_elixir_twoway.py:
# genserver.ex and usage.exs. DSPEX_EXECUTABLE names the dspex console script; API_BASE is
# the suite's OpenAI-compatible server. Last line: "elixir two-way docs: N passed, M failed".

case Path.wildcard("/usr/lib/erlang/lib/jiffy-*/ebin") do
  [ebin | _] -> :code.add_patha(String.to_charlist(ebin))
  [] -> :ok
end

defmodule Jason do
  @moduledoc "The two Jason functions the page uses, on top of Debian's erlang-jiffy."
  def encode!(term), do: IO.iodata_to_binary(:jiffy.encode(term))
  def decode!(binary), do: :jiffy.decode(binary, [:return_maps, :use_nil])
end

Code.require_file("checks.exs", __DIR__)

[dir, api_base] = System.argv()
Process.flag(:trap_exit, true)
Application.put_env(:my_app, :lm, %{"model" => "openai/docs-two-way", "api_base" => api_base,
                                    "api_key" => "sk-docs-two-way-secret", "cache" => false})
Application.put_env(:my_app, :slow_lm, %{"model" => "openai/delay-3000", "api_base" => api_base,
                                         "api_key" => "sk-docs-two-way-secret", "cache" => false})
Code.require_file(Path.join(dir, "genserver.ex"))
{:ok, agent} = MyApp.Agent.start_link()

cancelled = fn ->
  {:ok, stats} = MyApp.Agent.call("get_stats")
  Map.get(stats["errors_by_type"] || %{}, "cancelled", 0)
end

Checks.step("the page's usage block", fn ->
  {_, binding} = Code.eval_file(Path.join(dir, "usage.exs"))
  steps = binding[:steps]
  Checks.equal("the agent called both Elixir tools, then finish", Enum.map(steps, & &1["tool"]),
               ["lookup", "count_words", "finish"])
  Checks.equal("lookup's observation is what MyApp.Orders.lookup/1 returned", Enum.at(steps, 0)["observation"],
               %{"order" => "order 42", "status" => "shipped"})
  Checks.equal("count_words's observation", Enum.at(steps, 1)["observation"], 2)
  Checks.check("the answer was written from the observations", String.contains?(binding[:answer], "shipped"),
               inspect(binding[:answer]))
  Checks.equal("progress events reached the caller's mailbox in order", binding[:progress] |> Enum.uniq(), [1, 2, 3])
  Checks.check("the Elixir metric scored two of three", abs(binding[:score] - 200 / 3) < 0.01, inspect(binding[:score]))
  Checks.check("the given-up call timed out", match?({:error, "timeout", _}, binding[:gave_up]),
               inspect(binding[:gave_up]))
  Checks.check("...and was cancelled in the worker", Checks.eventually(fn -> cancelled.() >= 1 end, 2_000),
               "errors_by_type has no cancelled request")
end)

Checks.step("a caller that dies", fn ->
  before = cancelled.()
  caller = spawn(fn ->
    MyApp.Agent.request("execute_program", %{"program_id" => "slow", "session_id" => "slow",
                                             "inputs" => %{"question" => "never read"}})
    Process.sleep(200)
  end)
  Checks.wait_exit(caller)
  # The LM takes 3 s: a cancelled count before then is the monitor's work.
  Checks.check("its request is cancelled in the worker", Checks.eventually(fn -> cancelled.() > before end, 2_000),
               "still #{before} cancelled")
  Checks.equal("the GenServer holds no request of it", map_size(:sys.get_state(agent).requests), 0)
end)

Checks.step("an Elixir tool that raises", fn ->
  raising = %{"lookup" => fn _ -> raise "orders database is down" end, "count_words" => fn _ -> 1 end}
  {:ok, result} = MyApp.Agent.call("execute_program", %{"program_id" => "support",
                                                         "inputs" => %{"question" => "order 7"}}, raising)
  first = hd(result["trajectory"])
  Checks.check("its error is the agent's observation", String.contains?(first["observation"], "orders database is down"),
               inspect(first))
end)

Checks.step("stopping", fn ->
  {:os_pid, os_pid} = Port.info(:sys.get_state(agent).port, :os_pid)
  :ok = GenServer.stop(agent)
  Checks.check("the worker exited", not File.exists?("/proc/#{os_pid}") or
                 Checks.eventually(fn -> not File.exists?("/proc/#{os_pid}") end, 3_000), "#{os_pid} alive")
end)

Checks.finish("elixir two-way docs")
