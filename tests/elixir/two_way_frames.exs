# Two-way frames over an Erlang port, shared by tests/elixir/twoway_client.exs and
# tests/elixir/record_sessions.exs: a request's events are collected until its reply, and
# each `callback` event is answered by calling an Elixir function at once.
#
# `handlers` maps a callback's name to a one-argument function of its args; the function's
# value is the answer's `result`, `{:error, text}` an `error` answer, `:no_answer` no answer
# at all (to let the worker's callback timeout fire). Frames for other ids wait in a stash.

defmodule TwoWayFrames do
  def decode(binary), do: :jiffy.decode(binary, [:return_maps])

  def send_request(port, id, command, args) do
    frame = %{"id" => id, "command" => command, "args" => args,
              "timestamp" => DateTime.utc_now() |> DateTime.to_iso8601()}
    true = Port.command(port, :jiffy.encode(frame))
    id
  end

  # {reply, events} of request `id`; events in arrival order.
  def await(port, id, handlers \\ %{}, timeout \\ 30_000) do
    stash = Process.get({:two_way, port}, %{})
    case Map.pop(stash, {:reply, id}) do
      {nil, _} ->
        receive do
          {^port, {:data, binary}} ->
            keep(port, decode(binary), handlers)
            await(port, id, handlers, timeout)

          {^port, {:exit_status, status}} ->
            raise "worker exited with status #{status} while waiting for id #{inspect(id)}"
        after
          timeout -> raise "no reply to id #{inspect(id)} within #{timeout} ms"
        end

      {reply, rest} ->
        {events, rest} = Map.pop(rest, {:events, id}, [])
        Process.put({:two_way, port}, rest)
        {reply, events}
    end
  end

  def call(port, id, command, args, handlers \\ %{}, timeout \\ 30_000) do
    send_request(port, id, command, args)
    await(port, id, handlers, timeout)
  end

  defp keep(port, frame, handlers) do
    stash = Process.get({:two_way, port}, %{})
    id = frame["id"]
    if Map.has_key?(frame, "event") and not Map.has_key?(frame, "success") do
      if frame["event"] == "callback", do: answer(port, frame["data"], handlers)
      Process.put({:two_way, port}, Map.update(stash, {:events, id}, [frame], &(&1 ++ [frame])))
    else
      Process.put({:two_way, port}, Map.put(stash, {:reply, id}, frame))
    end
  end

  defp answer(port, %{"callback_id" => callback_id, "name" => name, "args" => args}, handlers) do
    answer =
      case Map.fetch(handlers, name) do
        {:ok, fun} ->
          try do
            case fun.(args) do
              :no_answer -> nil
              {:error, text} -> %{"error" => text}
              value -> %{"result" => value}
            end
          rescue
            error -> %{"error" => Exception.message(error)}
          end

        :error ->
          %{"error" => "no Elixir function for #{name}"}
      end

    if answer != nil do
      true = Port.command(port, :jiffy.encode(Map.put(answer, "callback_id", callback_id)))
    end
  end
end
