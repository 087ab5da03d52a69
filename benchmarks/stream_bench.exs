# The port side of the streaming benchmark: one `dspex serve` behind a real Erlang port
# ({:packet, 4}, jiffy, as DSPex opens it) measures, in one run:
#   ttfc      send of execute_program with stream: true -> its first `chunk` event
#   ping      a ping's round trip; callback: the client's answer -> the next callback event
#   burst     2,048 execute_program in flight against an LM answering in 200 ms, with the
#             worker's thread count and RSS read from /proc while they run
#   cancel    send of `cancel` -> the cancelled request's reply
#
# usage: elixir stream_bench.exs PYTHON ROOT API_BASE RUNS BURST   (prints one JSON line)

[jiffy | _] = Path.wildcard("/usr/lib/erlang/lib/jiffy-*/ebin")
:code.add_patha(String.to_charlist(jiffy))

[python, root, api_base, runs, burst] = System.argv()
runs = String.to_integer(runs)
burst = String.to_integer(burst)

port =
  Port.open({:spawn_executable, String.to_charlist(python)}, [
    :binary, :exit_status, {:packet, 4},
    {:args, ["-m", "dspex_cli", "serve", "--mode", "pool-worker", "--no-control", "--plugin", "twoway_plugin"]},
    {:env, [{~c"PYTHONPATH", String.to_charlist("#{root}/tests/plugins:#{root}")},
            {~c"LITELLM_LOCAL_MODEL_COST_MAP", ~c"True"}, {~c"DSPEX_LOG_LEVEL", ~c"warning"}]},
    {:cd, String.to_charlist(root)}
  ])

{:os_pid, os_pid} = Port.info(port, :os_pid)
decode = fn binary -> :jiffy.decode(binary, [:return_maps]) end
send_frame = fn map -> Port.command(port, :jiffy.encode(map)) end
now = fn -> System.monotonic_time(:microsecond) end

# Every frame of the port, in order: replies have "success", events have "event".
next_frame = fn timeout ->
  receive do
    {^port, {:data, binary}} -> decode.(binary)
    {^port, {:exit_status, status}} -> raise "worker exited with status #{status}"
  after
    timeout -> raise "no frame within #{timeout} ms"
  end
end

await_reply = fn id ->
  Stream.repeatedly(fn -> next_frame.(60_000) end)
  |> Enum.find(fn frame -> frame["id"] == id and Map.has_key?(frame, "success") end)
end

call = fn id, command, args ->
  send_frame.(%{"id" => id, "command" => command, "args" => args})
  reply = await_reply.(id)
  unless reply["success"], do: raise("#{command} failed: #{inspect(reply)}")
  reply["result"]
end

median = fn values ->
  sorted = Enum.sort(values)
  Enum.at(sorted, div(length(sorted), 2))
end

proc_status = fn ->
  text = File.read!("/proc/#{os_pid}/status")
  field = fn name -> Regex.run(~r/#{name}:\s+(\d+)/, text) |> Enum.at(1) |> String.to_integer() end
  {field.("Threads"), field.("VmRSS")}
end

call.(0, "ping", %{"initialization" => true})
call.(1, "configure_lm", %{"model" => "openai/stream-bench", "api_base" => api_base, "api_key" => "sk-bench-not-a-key",
                           "cache" => false, "session_id" => "ttfc"})
call.(2, "create_program", %{"id" => "qa", "signature" => "question -> answer", "session_id" => "ttfc"})
call.(3, "configure_lm", %{"model" => "openai/delay-200", "api_base" => api_base, "api_key" => "sk-bench-not-a-key",
                           "cache" => false, "session_id" => "burst"})
call.(4, "create_program", %{"id" => "qa", "signature" => "question -> answer", "session_id" => "burst"})
call.(5, "configure_lm", %{"model" => "openai/delay-3000", "api_base" => api_base, "api_key" => "sk-bench-not-a-key",
                           "cache" => false, "session_id" => "slow"})
call.(6, "create_program", %{"id" => "qa", "signature" => "question -> answer", "session_id" => "slow"})
# Untimed: DSPy's import and the first connections belong to start-up.
for {session, id} <- [{"ttfc", 7}, {"burst", 8}] do
  call.(id, "execute_program", %{"program_id" => "qa", "inputs" => %{"question" => "warm-up"}, "session_id" => session})
end

# -- time to first chunk ----------------------------------------------------------------
ttfc =
  for run <- 1..runs do
    id = 1000 + run
    started = now.()
    send_frame.(%{"id" => id, "command" => "execute_program", "stream" => true,
                  "args" => %{"program_id" => "qa", "inputs" => %{"question" => "stream number #{run}"},
                              "session_id" => "ttfc"}})
    first =
      Stream.repeatedly(fn -> next_frame.(30_000) end)
      |> Enum.find(fn f -> f["id"] == id and f["event"] == "chunk" end)
    took = now.() - started
    _ = first
    reply = await_reply.(id)
    unless reply["success"], do: raise("streamed execute failed: #{inspect(reply)}")
    took / 1000.0
  end

# -- ping and callback round trips ------------------------------------------------------
ping =
  for run <- 1..(runs * 5) do
    started = now.()
    call.(2000 + run, "ping", %{})
    (now.() - started) / 1000.0
  end

tools = for i <- 1..10, do: %{"name" => "t#{i}", "description" => "bench", "parameters" => %{"type" => "object"},
                              "handler" => "client"}
names = Enum.map(tools, & &1["name"])

callback =
  for run <- 1..runs, reduce: [] do
    acc ->
      id = 3000 + run
      send_frame.(%{"id" => id, "command" => "tw_ask", "args" => %{"names" => names, "tools" => tools}})
      # Answer each callback at once; time from our answer to the next callback event.
      {gaps, _} =
        Enum.reduce(1..length(names), {[], nil}, fn _, {gaps, answered_at} ->
          event = Stream.repeatedly(fn -> next_frame.(30_000) end) |> Enum.find(fn f -> f["event"] == "callback" end)
          arrived = now.()
          gaps = if answered_at, do: [(arrived - answered_at) / 1000.0 | gaps], else: gaps
          send_frame.(%{"callback_id" => event["data"]["callback_id"], "result" => %{"ok" => event["data"]["name"]}})
          {gaps, now.()}
        end)
      reply = await_reply.(id)
      unless reply["success"], do: raise("tw_ask failed: #{inspect(reply)}")
      acc ++ gaps
  end

# -- burst ------------------------------------------------------------------------------
{threads_before, rss_before} = proc_status.()
parent = self()
sampler =
  spawn(fn ->
    sample = fn sample, most_threads, most_rss ->
      receive do
        :stop -> send(parent, {:samples, most_threads, most_rss})
      after
        10 ->
          {threads, rss} = proc_status.()
          sample.(sample, max(most_threads, threads), max(most_rss, rss))
      end
    end
    sample.(sample, threads_before, rss_before)
  end)

burst_started = now.()
for i <- 1..burst do
  send_frame.(%{"id" => 10_000 + i, "command" => "execute_program",
                "args" => %{"program_id" => "qa", "inputs" => %{"question" => "burst #{i}"}, "session_id" => "burst"}})
end
burst_sent = now.()
failures =
  Enum.reduce(1..burst, 0, fn _, failed ->
    frame = next_frame.(60_000)
    if frame["success"], do: failed, else: failed + 1
  end)
burst_s = (now.() - burst_started) / 1.0e6
send(sampler, :stop)
{most_threads, most_rss} = receive do {:samples, t, r} -> {t, r} end

# -- cancel -----------------------------------------------------------------------------
cancel =
  for run <- 1..runs do
    id = 20_000 + run
    send_frame.(%{"id" => id, "command" => "execute_program",
                  "args" => %{"program_id" => "qa", "inputs" => %{"question" => "slow #{run}"}, "session_id" => "slow"}})
    Process.sleep(50)
    started = now.()
    send_frame.(%{"id" => 30_000 + run, "command" => "cancel", "args" => %{"request_id" => id}})
    # Both replies, in whichever order: the cancelled request's is the one timed.
    {took, reply, _} =
      Enum.reduce_while(Stream.repeatedly(fn -> next_frame.(30_000) end), {nil, nil, false},
        fn frame, {took, reply, cancel_seen} ->
          replied = Map.has_key?(frame, "success")
          {took, reply} = if replied and frame["id"] == id, do: {(now.() - started) / 1000.0, frame}, else: {took, reply}
          cancel_seen = cancel_seen or (replied and frame["id"] == 30_000 + run)
          if cancel_seen and took != nil, do: {:halt, {took, reply, true}}, else: {:cont, {took, reply, cancel_seen}}
        end)
    if reply["error_type"] != "cancelled", do: raise("cancel failed: #{inspect(reply)}")
    took
  end

IO.puts(:jiffy.encode(%{
  "ttfc_ms_p50" => median.(ttfc), "ttfc_ms" => ttfc,
  "ping_ms_p50" => median.(ping), "callback_ms_p50" => median.(callback), "callbacks" => length(callback),
  "burst" => burst, "burst_s" => burst_s, "burst_send_s" => (burst_sent - burst_started) / 1.0e6,
  "burst_failures" => failures, "threads_before" => threads_before, "threads_max" => most_threads,
  "rss_before_kb" => rss_before, "rss_max_kb" => most_rss,
  "cancel_ms_p50" => median.(cancel), "cancel_ms_max" => Enum.max(cancel)
}))
Port.close(port)
