# The port side of the DSPy jobs benchmark: drives `dspex serve` through a real Erlang
# port ({:packet, 4}, as DSPex does) and times evaluate_program and compile_program with
# wait: true, from the request's send to its reply.
#
# usage: elixir dspy_jobs.exs PYTHON ROOT API_BASE MODEL DATA_JSON THREADS  (prints one JSON line)

[jiffy | _] = Path.wildcard("/usr/lib/erlang/lib/jiffy-*/ebin")
:code.add_patha(String.to_charlist(jiffy))
Code.require_file("../tests/elixir/port_replies.exs", __DIR__)

[python, root, api_base, model, data_file, threads] = System.argv()
data = :jiffy.decode(File.read!(data_file), [:return_maps])

port =
  Port.open({:spawn_executable, String.to_charlist(python)}, [
    :binary, :exit_status, {:packet, 4},
    {:args, ["-m", "dspex_cli", "serve", "--mode", "pool-worker", "--no-control"]},
    {:env, [{~c"PYTHONPATH", String.to_charlist(root)}, {~c"LITELLM_LOCAL_MODEL_COST_MAP", ~c"True"},
            {~c"DSPEX_LOG_LEVEL", ~c"warning"}]},
    {:cd, String.to_charlist(root)}
  ])

call = fn id, command, args ->
  Port.command(port, :jiffy.encode(%{"id" => id, "command" => command, "args" => args}))
  reply = PortReplies.await(port, id, 600_000, &:jiffy.decode(&1, [:return_maps]))
  unless reply["success"], do: raise("#{command} failed: #{inspect(reply)}")
  reply["result"]
end

call.(0, "ping", %{"initialization" => true})
call.(1, "configure_lm", %{"model" => model, "api_base" => api_base, "api_key" => "sk-bench-not-a-key", "cache" => false})
call.(2, "create_program", %{"id" => "qa", "signature" => "question -> answer"})
# Untimed: DSPy's import and the first HTTP connection belong to start-up, not to the job.
call.(3, "execute_program", %{"program_id" => "qa", "inputs" => %{"question" => "warm-up"}})

timed = fn id, command, args ->
  started = System.monotonic_time(:microsecond)
  result = call.(id, command, args)
  {(System.monotonic_time(:microsecond) - started) / 1.0e6, result}
end

{evaluate_s, evaluated} =
  timed.(4, "evaluate_program", %{"program_id" => "qa", "devset" => data["devset"], "metric" => "exact_match",
                                  "num_threads" => String.to_integer(threads), "max_errors" => length(data["devset"]),
                                  "wait" => true})

{compile_s, compiled} =
  timed.(5, "compile_program", %{"program_id" => "qa", "optimizer" => "bootstrap_few_shot",
                                 "trainset" => data["trainset"], "metric" => "exact_match",
                                 "options" => %{"max_bootstrapped_demos" => 4, "max_labeled_demos" => 4},
                                 "wait" => true})

demo_count = compiled["predictors"] |> Map.values() |> Enum.map(&length(&1["demos"])) |> Enum.sum()

# Pings while a compile runs in the background (wait: false): what a health check sees.
started = call.(6, "compile_program", %{"program_id" => "qa", "optimizer" => "bootstrap_few_shot",
                                       "trainset" => data["trainset"], "metric" => "exact_match",
                                       "options" => %{"max_bootstrapped_demos" => 4, "max_labeled_demos" => 4}})
ping_us =
  for n <- 1..50 do
    t0 = System.monotonic_time(:microsecond)
    call.(100 + n, "ping", %{})
    rtt = System.monotonic_time(:microsecond) - t0
    Process.sleep(5)
    rtt
  end
job = call.(200, "get_job", %{"job_id" => started["job_id"]})

IO.puts(:jiffy.encode(%{"evaluate_s" => evaluate_s, "evaluate_score" => evaluated["score"], "compile_s" => compile_s,
                        "demos" => demo_count, "ping_during_compile_max_us" => Enum.max(ping_us),
                        "ping_during_compile_p50_us" => Enum.at(Enum.sort(ping_us), 25),
                        "compile_running_during_pings" => job["status"] == "running" or job["progress"]["done"] > 0}))
Port.close(port)
