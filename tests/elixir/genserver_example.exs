# Runs the Elixir examples of docs/elixir.md through a real BEAM, exactly as written there.
#
# Usage:
#   elixir tests/elixir/genserver_example.exs BLOCKS_DIR [--slow-api-base URL]
#
# BLOCKS_DIR holds the page's blocks, cut out of the page by tests/integration/test_docs_elixir.py:
# runtime.exs, plain_port.exs, genserver.ex, application.ex, usage.exs. DSPEX_EXECUTABLE
# names the dspex console script. With --slow-api-base (tests/openai_server.py), a call
# in flight when the worker is killed must get {:error, "worker_exited", _}.
# Exit status 0 only when every check passed; the last line is
# "elixir docs: N passed, M failed".

defmodule Jason do
  @moduledoc "The two Jason functions the page uses, on top of Debian's erlang-jiffy."
  def encode!(term), do: IO.iodata_to_binary(:jiffy.encode(term))
  def decode!(binary), do: :jiffy.decode(binary, [:return_maps, :use_nil])
end

defmodule DocChecks do
  @moduledoc "Pass/fail bookkeeping for this one script."

  def check(name, true, _detail), do: record(name, :ok, nil)
  def check(name, _false, detail), do: record(name, :fail, detail)

  def equal(name, actual, expected),
    do: check(name, actual == expected, "expected #{inspect(expected)}, got #{inspect(actual)}")

  # A step that raises counts as one failure, and the later steps still run.
  def step(name, fun) do
    IO.puts("# #{name}")

    try do
      fun.()
    rescue
      error -> record("#{name} (aborted)", :fail, Exception.format(:error, error, __STACKTRACE__))
    catch
      kind, value -> record("#{name} (aborted)", :fail, "#{kind}: #{inspect(value)}")
    end
  end

  def finish do
    {passed, failed} = Process.get(:checks, {0, 0})
    IO.puts("elixir docs: #{passed} passed, #{failed} failed")
    System.halt(if failed == 0, do: 0, else: 1)
  end

  defp record(name, outcome, detail) do
    {passed, failed} = Process.get(:checks, {0, 0})

    case outcome do
      :ok ->
        IO.puts("ok   #{name}")
        Process.put(:checks, {passed + 1, failed})

      :fail ->
        IO.puts("FAIL #{name}: #{detail}")
        Process.put(:checks, {passed, failed + 1})
    end
  end
end

defmodule DocSteps do
  import DocChecks

  def os_pid_alive?(os_pid), do: match?({_, 0}, System.cmd("kill", ["-0", "#{os_pid}"], stderr_to_stdout: true))

  def worker_os_pid do
    %{port: port} = :sys.get_state(MyApp.DSPy)
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    os_pid
  end

  # Polls `fun` until it returns a truthy value, for at most `ms` milliseconds.
  def eventually(fun, ms \\ 10_000), do: poll(fun, System.monotonic_time(:millisecond) + ms)

  defp poll(fun, deadline) do
    value = fun.()

    cond do
      value -> value
      System.monotonic_time(:millisecond) > deadline -> nil
      true ->
        Process.sleep(20)
        poll(fun, deadline)
    end
  end

  def plain_port(dir) do
    {_, binding} = Code.eval_file(Path.join(dir, "plain_port.exs"))
    port = Keyword.fetch!(binding, :port)
    Port.command(port, Jason.encode!(%{id: 7, command: "ping", args: %{}}))

    receive do
      {^port, {:data, binary}} ->
        reply = Jason.decode!(binary)
        equal("plain port: the ping reply echoes id 7", reply["id"], 7)
        equal("plain port: the worker id is w1", reply["result"]["worker_id"], "w1")
    after
      15_000 -> check("plain port: ping answered", false, "no reply within 15 s")
    end

    Port.close(port)
  end

  def usage(dir) do
    {_, binding} = Code.eval_file(Path.join(dir, "usage.exs"))
    check("usage: answer is a string", is_binary(binding[:answer]), inspect(binding))
    check("usage: confidence is a float", is_float(binding[:confidence]), inspect(binding))
    check("usage: chain of thought adds reasoning", is_binary(binding[:why]), inspect(binding))
  end

  # A call running on the slow model when the worker dies; its Task reports the reply.
  def start_slow_call(nil), do: nil

  def start_slow_call(api_base) do
    {:ok, _} =
      MyApp.DSPy.call("configure_lm", %{"model" => "openai/delay-500", "api_base" => api_base,
                                        "api_key" => "sk-docs-test", "session_id" => "slow", "cache" => false})
    {:ok, _} = MyApp.DSPy.call("create_program", %{"id" => "slow", "session_id" => "slow",
                                                  "signature" => "question -> answer"})
    task = Task.async(fn ->
      MyApp.DSPy.call("execute_program", %{"program_id" => "slow", "session_id" => "slow",
                                           "inputs" => %{"question" => "q"}})
    end)
    # Until the worker has the request in flight (ping is inline, so this does not wait for it).
    eventually(fn ->
      {:ok, %{"inflight" => n}} = MyApp.DSPy.call("get_stats")
      n > 0
    end, 5_000)
    task
  end

  def kill_worker(api_base) do
    old_pid = Process.whereis(MyApp.DSPy)
    old_os_pid = worker_os_pid()
    slow = start_slow_call(api_base)
    ref = Process.monitor(old_pid)
    System.cmd("kill", ["-9", "#{old_os_pid}"])

    receive do
      {:DOWN, ^ref, :process, ^old_pid, reason} ->
        equal("kill -9: the GenServer exits with {:worker_exited, 137}", reason, {:worker_exited, 137})
    after
      10_000 -> check("kill -9: the GenServer exits", false, "still running 10 s after kill -9")
    end

    if slow do
      reply = Task.await(slow, 10_000)
      check("kill -9: the call in flight gets {:error, \"worker_exited\", _}",
            match?({:error, "worker_exited", _}, reply), inspect(reply))
    end

    new_pid = eventually(fn ->
      pid = Process.whereis(MyApp.DSPy)
      pid != nil and pid != old_pid and pid
    end)
    check("kill -9: the supervisor starts a new GenServer", is_pid(new_pid), inspect(new_pid))
    equal("kill -9: the new worker answers ping", elem(MyApp.DSPy.call("ping"), 0), :ok)
    new_os_pid = worker_os_pid()
    check("kill -9: the new worker is a new OS process", new_os_pid != old_os_pid, inspect(new_os_pid))
    check("kill -9: the old worker is gone", not os_pid_alive?(old_os_pid), "#{old_os_pid} still alive")
    # The new worker starts empty: programs lived in the old one.
    {:error, type, _} = MyApp.DSPy.call("execute_program", %{"program_id" => "qa", "inputs" => %{"question" => "q"}})
    equal("kill -9: the new worker has no programs yet", type, "program_not_found")
  end

  def stop_application(sup) do
    pid = Process.whereis(MyApp.DSPy)
    os_pid = worker_os_pid()
    ref = Process.monitor(pid)
    :ok = Supervisor.stop(sup)

    receive do
      {:DOWN, ^ref, :process, ^pid, reason} -> equal("stop: the GenServer stops with :shutdown", reason, :shutdown)
    after
      10_000 -> check("stop: the GenServer stops", false, "still running")
    end

    # terminate/2 waited for the worker's exit, so it is already gone.
    check("stop: the worker exited before Supervisor.stop returned", not os_pid_alive?(os_pid), "#{os_pid} alive")
  end
end

{opts, [dir], []} = OptionParser.parse(System.argv(), strict: [slow_api_base: :string])
api_base = opts[:slow_api_base]

# This script is the application's parent: it must outlive a crash of the supervisor.
Process.flag(:trap_exit, true)

DocChecks.step("config/runtime.exs", fn ->
  config = Config.Reader.read!(Path.join(dir, "runtime.exs"))
  Application.put_all_env(config)
  DocChecks.equal("runtime.exs reads DSPEX_EXECUTABLE", Application.get_env(:my_app, :dspex_executable),
                  System.fetch_env!("DSPEX_EXECUTABLE"))
end)

DocChecks.step("plain Port.open", fn -> DocSteps.plain_port(dir) end)

Code.require_file(Path.join(dir, "genserver.ex"))
Code.require_file(Path.join(dir, "application.ex"))
{:ok, sup} = MyApp.Application.start(:normal, [])

DocChecks.step("using it", fn -> DocSteps.usage(dir) end)
DocChecks.step("kill -9 of the worker", fn -> DocSteps.kill_worker(api_base) end)
DocChecks.step("stopping the application", fn -> DocSteps.stop_application(sup) end)
DocChecks.finish()
